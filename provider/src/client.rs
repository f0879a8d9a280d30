//! The HTTP client for `matrixhostd`, on the shared `matrixhost_api` types.
//!
//! Every call retries 429 and 5xx answers (and connection failures) with exponential backoff
//! and jitter, honours `Retry-After`, and is bounded in attempts and in total time, so a call
//! that keeps failing reports what failed, how, and after how many attempts. Creates send an
//! `Idempotency-Key` (the same on every retry), so a retried create cannot create twice.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use matrixhost_api::{ApiError, ErrorCode, Page, IDEMPOTENCY_KEY, IF_MATCH};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How hard a call tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No retry starts later than this after the first attempt.
    pub max_elapsed: Duration,
    /// The first backoff; it doubles on each retry.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the retries.
    pub max_retry_after: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum ApiFailure {
    /// The server answered with an error status.
    Status { method: Method, path: String, status: u16, error: Option<ApiError>, body: String, attempts: u32 },
    /// No answer: connection refused, reset, timed out.
    Transport { method: Method, path: String, message: String, attempts: u32 },
    /// An answer that is not the expected JSON.
    Decode { method: Method, path: String, message: String },
}

impl ApiFailure {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The API error code, matched as `api::ErrorCode` (never as text).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Status { error: Some(e), .. } => Some(e.code),
            _ => None,
        }
    }

    /// The request field the server blamed, as a JSON path.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Status { error: Some(e), .. } => e.field.as_deref(),
            _ => None,
        }
    }

    /// The server's message (or a description of the failure).
    pub fn message(&self) -> String {
        match self {
            Self::Status { error: Some(e), .. } => e.message.clone(),
            Self::Status { status, body, .. } => {
                let body = body.trim();
                if body.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", truncate(body, 300))
                }
            }
            Self::Transport { message, .. } => message.clone(),
            Self::Decode { message, .. } => message.clone(),
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = |n: u32| if n > 1 { format!(", after {n} attempts") } else { String::new() };
        match self {
            Self::Status { method, path, status, error, attempts: n, .. } => {
                write!(f, "{}\n\n(matrixhost answered {method} {path} with HTTP {status}", self.message())?;
                if let Some(e) = error {
                    write!(f, " `{}`; request id {}", e.code, e.request_id)?;
                }
                write!(f, "{})", attempts(*n))
            }
            Self::Transport { method, path, message, attempts: n } => {
                write!(f, "{method} {path} failed{}: {message}", attempts(*n))
            }
            Self::Decode { method, path, message } => {
                write!(f, "{method} {path}: the answer is not what the provider expects: {message}")
            }
        }
    }
}

impl std::error::Error for ApiFailure {}

/// The token the provider is configured with, kept only so diagnostics can scrub it.
static SECRET: OnceLock<Mutex<Option<String>>> = OnceLock::new();

pub(crate) fn secret_for_scrubbing() -> Option<String> {
    SECRET.get().and_then(|m| m.lock().ok().and_then(|g| g.clone()))
}

fn remember_secret(token: &str) {
    let m = SECRET.get_or_init(|| Mutex::new(None));
    if let Ok(mut g) = m.lock() {
        *g = Some(token.to_owned());
    }
}

/// A configured API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// The API's base URL (the console is served from it too).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    token: String,
    policy: RetryPolicy,
    listings: Listings,
}

/// How long a listing answers reads: long enough for one refresh of many resources, short
/// enough that a later command never sees it (each Terraform command starts a new provider).
const LISTING_FRESH_FOR: Duration = Duration::from_secs(5);

/// Collections listed once per refresh. The first read of an item lists its whole collection
/// (pages of 100) and the refresh's other reads are answered from that listing: 1,000 reserved
/// users cost 10 requests instead of 1,000. Any write under a collection drops its listing.
#[derive(Default)]
struct Listings(Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<Option<Listing>>>>>);

struct Listing {
    at: Instant,
    /// Each item as the JSON text the server sent (a fraction of the memory of parsed values).
    items: std::collections::HashMap<String, Box<serde_json::value::RawValue>>,
}

/// Just the id of a listed item.
#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

impl Listings {
    fn slot(&self, collection: &str) -> Arc<tokio::sync::Mutex<Option<Listing>>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(collection.to_owned()).or_default().clone()
    }

    /// Drops the listings a write to `path` may change (its collection and anything below).
    fn forget(&self, path: &str) {
        let path = path.split('?').next().unwrap_or(path);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|collection, _| !(path.starts_with(collection.as_str()) || collection.starts_with(path)));
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client").field("endpoint", &self.inner.base).finish()
    }
}

/// A fresh idempotency key for one create (reused by its retries).
pub fn idempotency_key() -> String {
    let mut rng = rand::thread_rng();
    format!("tf-{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

impl Client {
    /// A client for `endpoint` (`http(s)://host[:port]`, no path) with `token`.
    pub fn new(endpoint: &str, token: &str, policy: RetryPolicy, user_agent: &str) -> Result<Client, String> {
        let base = endpoint.trim().trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| format!("`{base}` is not an http:// or https:// URL"))?;
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err(format!("`{base}` is not a URL of the form https://host[:port]"));
        }
        if token.trim().is_empty() {
            return Err("the API token is empty".into());
        }
        remember_secret(token);
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(policy.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client { inner: Arc::new(Inner { http, base, token: token.trim().to_owned(), policy, listings: Listings::default() }) })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.base
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiFailure> {
        self.json(Method::GET, path, None::<&()>, &[]).await
    }

    /// `GET`, with 404 as `None`.
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ApiFailure> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a paginated list (`path` may carry a query already).
    pub async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ApiFailure> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        // Bounded: a server that keeps returning pages cannot keep the provider forever.
        for _ in 0..10_000 {
            let url = match &token {
                Some(t) => format!("{path}{sep}limit={}&page_token={}", matrixhost_api::MAX_PAGE_SIZE, escape(t)),
                None => format!("{path}{sep}limit={}", matrixhost_api::MAX_PAGE_SIZE),
            };
            let page: Page<T> = self.get(&url).await?;
            items.extend(page.items);
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(items),
            }
        }
        Ok(items)
    }

    /// The item `id` of `collection`, answered from a listing of the collection made for this
    /// refresh (see [`Listings`]). An id the listing lacks is read directly, so an item made
    /// since is found and a missing one is confirmed (`None`).
    pub async fn get_listed<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<Option<T>, ApiFailure> {
        let slot = self.inner.listings.slot(collection);
        let found = {
            let mut listing = slot.lock().await;
            if listing.as_ref().is_none_or(|l| l.at.elapsed() >= LISTING_FRESH_FOR) {
                let items = match self.list_all::<Box<serde_json::value::RawValue>>(collection).await {
                    Ok(items) => items,
                    // The collection's parent is gone, and the item with it.
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e),
                };
                let items = items.into_iter().filter_map(|raw| Some((serde_json::from_str::<IdOnly>(raw.get()).ok()?.id, raw))).collect();
                *listing = Some(Listing { at: Instant::now(), items });
            }
            listing.as_ref().and_then(|l| l.items.get(id).map(|raw| serde_json::from_str::<T>(raw.get())))
        };
        let path = format!("{collection}/{}", escape(id));
        match found {
            Some(parsed) => parsed.map(Some).map_err(|e| ApiFailure::Decode { method: Method::GET, path, message: e.to_string() }),
            None => self.get_opt(&path).await,
        }
    }

    /// `POST` a create with an idempotency key.
    pub async fn create<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, key: &str) -> Result<T, ApiFailure> {
        self.json(Method::POST, path, Some(body), &[(IDEMPOTENCY_KEY, key.to_owned())]).await
    }

    /// `PUT` with `If-Match: "<version>"` when a version is known.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, version: Option<i64>) -> Result<T, ApiFailure> {
        let headers: Vec<(&str, String)> = version.map(|v| (IF_MATCH, format!("\"{v}\""))).into_iter().collect();
        self.json(Method::PUT, path, Some(body), &headers).await
    }

    /// `DELETE`; returns the status (204, 202, ...) and the body, if any. 404 is an error the
    /// caller usually treats as "already gone".
    pub async fn delete(&self, path: &str) -> Result<(u16, serde_json::Value), ApiFailure> {
        let (status, bytes) = self.send(Method::DELETE, path, None, &[]).await?;
        let body = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null) };
        Ok((status, body))
    }

    /// A raw `POST` of JSON without idempotency (test hooks).
    pub async fn post_raw(&self, path: &str, body: &serde_json::Value) -> Result<(u16, Vec<u8>), ApiFailure> {
        self.send(Method::POST, path, Some(serde_json::to_vec(body).unwrap_or_default()), &[]).await
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, String)],
    ) -> Result<T, ApiFailure> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ApiFailure::Decode {
                method: method.clone(),
                path: path.to_owned(),
                message: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        let (_, answer) = self.send(method.clone(), path, bytes, headers).await?;
        serde_json::from_slice(&answer).map_err(|e| ApiFailure::Decode { method, path: path.to_owned(), message: e.to_string() })
    }

    /// One call with its retries.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Vec<u8>), ApiFailure> {
        if method != Method::GET {
            self.inner.listings.forget(path);
        }
        let url = format!("{}{}", self.inner.base, path);
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.inner.token)
                .header("accept", "application/json");
            for (name, value) in headers {
                req = req.header(*name, value.as_str());
            }
            if let Some(b) = &body {
                req = req.header("content-type", "application/json").body(b.clone());
            }
            tracing::debug!(%method, path, attempt, "matrixhost request");
            let wait = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = parse_retry_after(resp.headers());
                    let bytes = match resp.bytes().await {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            let message = describe(&e);
                            match self.next_wait(attempt, started, None) {
                                Some(wait) => {
                                    tracing::debug!(%method, path, attempt, "reading the answer failed; retrying");
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                None => return Err(ApiFailure::Transport { method, path: path.to_owned(), message, attempts: attempt }),
                            }
                        }
                    };
                    if (200..300).contains(&status) {
                        return Ok((status, bytes));
                    }
                    let failure = || ApiFailure::Status {
                        method: method.clone(),
                        path: path.to_owned(),
                        status,
                        error: serde_json::from_slice::<ApiError>(&bytes).ok(),
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                        attempts: attempt,
                    };
                    if !(status == 429 || status >= 500) {
                        return Err(failure());
                    }
                    match self.next_wait(attempt, started, retry_after) {
                        Some(wait) => {
                            tracing::debug!(%method, path, attempt, status, wait_ms = wait.as_millis() as u64, "retrying");
                            wait
                        }
                        None => return Err(failure()),
                    }
                }
                Err(e) => {
                    let message = describe(&e);
                    match self.next_wait(attempt, started, None) {
                        Some(wait) => {
                            tracing::debug!(%method, path, attempt, "transport error; retrying");
                            wait
                        }
                        None => return Err(ApiFailure::Transport { method, path: path.to_owned(), message, attempts: attempt }),
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// How long to wait before the next attempt, or `None` when the bound is reached.
    fn next_wait(&self, attempt: u32, started: Instant, retry_after: Option<Duration>) -> Option<Duration> {
        let p = self.inner.policy;
        if attempt >= p.max_attempts {
            return None;
        }
        let wait = match retry_after {
            Some(ra) if ra > p.max_retry_after => return None,
            Some(ra) => ra,
            None => backoff(p, attempt),
        };
        if started.elapsed() + wait > p.max_elapsed {
            return None;
        }
        Some(wait)
    }
}

/// Exponential backoff with ±25% jitter: base, 2·base, 4·base, ... capped.
pub fn backoff(p: RetryPolicy, attempt: u32) -> Duration {
    let exp = p.base_delay.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
    let capped = exp.min(p.max_delay);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    capped.mul_f64(jitter)
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().to_owned();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(&raw).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Percent-encodes a path segment or query value.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let d = backoff(p, attempt);
            assert!(d <= p.max_delay.mul_f64(1.25), "{attempt}: {d:?}");
        }
        assert!(backoff(p, 1) < Duration::from_millis(700));
    }

    #[test]
    fn endpoints_must_be_urls_and_the_token_never_prints() {
        assert!(Client::new("ftp://x", "tok", RetryPolicy::default(), "t").is_err());
        assert!(Client::new("http://127.0.0.1:1", "", RetryPolicy::default(), "t").is_err());
        let c = Client::new("http://127.0.0.1:1/", "mh_secret_token_value", RetryPolicy::default(), "t").unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("mh_secret"));
    }

    #[test]
    fn writes_drop_the_listings_they_may_change() {
        let l = Listings::default();
        for c in ["/v1/homeservers/hs_a/reserved-users", "/v1/homeservers/hs_b/reserved-users", "/v1/billing-plans"] {
            l.slot(c);
        }
        let kept = |l: &Listings| {
            let mut k: Vec<String> = l.0.lock().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        l.forget("/v1/homeservers/hs_a/reserved-users/ru_1");
        assert_eq!(kept(&l), ["/v1/billing-plans", "/v1/homeservers/hs_b/reserved-users"]);
        l.forget("/v1/homeservers/hs_b");
        assert_eq!(kept(&l), ["/v1/billing-plans"]);
        l.forget("/v1/homeservers?x=1");
        assert_eq!(kept(&l), ["/v1/billing-plans"], "a sibling collection stays");
    }

    #[test]
    fn escapes() {
        assert_eq!(escape("a@b.com"), "a%40b.com");
    }
}
