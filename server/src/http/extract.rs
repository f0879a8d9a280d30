//! Extractors shared by every handler.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use matrixhost_api::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{AppError, AppResult};
use super::App;
use crate::domain::PageRequest;

/// The organization behind the request's bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: String,
    pub org_name: String,
    pub email_verified: bool,
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<App>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        let app = Arc::<App>::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| AppError::unauthorized("missing bearer token; send `Authorization: Bearer <token>`"))?;
        let now = app.platform.clock.now();
        let found = crate::domain::orgs::authenticate(&app.platform.db, &app.last_used, token, now).await?;
        let principal = found.ok_or_else(|| AppError::unauthorized("unknown, expired or revoked token"))?;
        super::note_org(&principal.org_id);
        if let Err(retry_after) = app.rate_limiter.check(&principal.token_id) {
            let mut err = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, format!("too many requests; retry after {retry_after} s"));
            err.retry_after = Some(retry_after);
            return Err(err);
        }
        Ok(Caller { org_id: principal.org_id, org_name: principal.org_name, email_verified: principal.email_verified })
    }
}

/// A JSON body whose errors name the field at fault: syntax errors are 400, a field that breaks
/// a rule is 422 with `field` set to its JSON path (e.g. `volume.encrypted`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> AppResult<Self> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> AppResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end().map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    Ok(value)
}

fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> AppError {
    let inner = e.inner();
    if !inner.is_data() {
        return AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidJson, format!("invalid JSON: {inner}"));
    }
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = strip_position(&inner.to_string());
    let join = |name: &str| if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    if let Some(name) = backticked_after(&message, "unknown field `") {
        // The path already ends at the unknown field.
        let field = if path.is_empty() { name } else { path.clone() };
        return AppError::new(StatusCode::BAD_REQUEST, ErrorCode::UnknownField, format!("{field}: unknown field")).with_field(field);
    }
    if let Some(name) = backticked_after(&message, "missing field `") {
        return AppError::field(&join(&name), "is required");
    }
    if path.is_empty() {
        return AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidJson, format!("invalid request body: {message}"));
    }
    AppError::field(&path, message)
}

/// serde_json appends " at line 1 column 7"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// `limit` and `page_token` of a list, plus the list's filters.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub limit: u32,
    /// The last id of the previous page.
    pub after: Option<String>,
    pub filters: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        let Query(mut q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, e.body_text()))?;
        let limit = match q.remove("limit") {
            None => 50,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=matrixhost_api::MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| AppError::field("limit", format!("`{raw}` is not a page size; use 1-{}", matrixhost_api::MAX_PAGE_SIZE)))?,
        };
        let after = q.remove("page_token").map(|t| decode_page_token(&t)).transpose()?;
        Ok(ListParams { limit, after, filters: q })
    }
}

/// Page tokens are opaque to clients; inside they are the last id of the previous page, so any
/// token of the documented shape is a place to continue from (keyset pagination).
pub fn encode_page_token(last_id: &str) -> String {
    last_id.to_owned()
}

fn decode_page_token(token: &str) -> AppResult<String> {
    matrixhost_api::request::parse_page_token(token).map_err(|e| AppError::field("page_token", e.message))
}

impl ListParams {
    /// Turns `limit + 1` fetched items into a page: the extra item only says another page exists.
    pub fn page<T>(&self, mut items: Vec<T>, id_of: impl Fn(&T) -> &str) -> matrixhost_api::Page<T> {
        let next_page_token = if items.len() > self.limit as usize {
            items.truncate(self.limit as usize);
            items.last().map(|last| encode_page_token(id_of(last)))
        } else {
            None
        };
        matrixhost_api::Page { items, next_page_token }
    }

    /// Pages an in-memory list already sorted by id (the catalogs).
    pub fn page_of<T: Clone>(&self, all: &[T], id_of: impl Fn(&T) -> &str) -> matrixhost_api::Page<T> {
        let rest: Vec<T> = all
            .iter()
            .filter(|t| self.after.as_deref().is_none_or(|after| id_of(t) > after))
            .take(self.limit as usize + 1)
            .cloned()
            .collect();
        self.page(rest, id_of)
    }

    /// Rows to fetch: one more than the page, to learn whether another page exists.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The keyset cursor: ids sort the same way on both backends.
    pub fn after_id(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }

    /// What the domain's list functions take.
    pub fn request(&self) -> PageRequest<'_> {
        PageRequest { after: self.after_id(), fetch: self.fetch() }
    }
}

/// `If-Match: "<version>"`: the write applies only to that version.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> AppResult<Self> {
        let Some(raw) = parts.headers.get(header::IF_MATCH) else { return Ok(IfMatch(None)) };
        matrixhost_api::request::parse_if_match(raw.to_str().unwrap_or("\u{0}"))
            .map(IfMatch)
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidHeader, e.message).with_field("If-Match"))
    }
}

/// `Idempotency-Key`: a retried create returns the first result.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> AppResult<Self> {
        let Some(raw) = parts.headers.get(matrixhost_api::IDEMPOTENCY_KEY) else { return Ok(IdempotencyKey(None)) };
        matrixhost_api::request::parse_idempotency_key(raw.to_str().unwrap_or("\u{0}"))
            .map(|k| IdempotencyKey(Some(k)))
            .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidHeader, e.message).with_field("Idempotency-Key"))
    }
}

/// A resource response with its version as the ETag.
pub struct Versioned<T> {
    pub status: StatusCode,
    pub body: T,
    pub version: i64,
}

impl<T> Versioned<T> {
    pub fn ok(body: T, version: i64) -> Self {
        Self { status: StatusCode::OK, body, version }
    }
    pub fn created(body: T, version: i64) -> Self {
        Self { status: StatusCode::CREATED, body, version }
    }
}

impl<T: Serialize> IntoResponse for Versioned<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", self.version)) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrixhost_api::HomeserverCreate;

    fn err_of(body: &str) -> AppError {
        parse_json::<HomeserverCreate>(body.as_bytes()).unwrap_err()
    }

    const GOOD: &str = r#"{"name":"a","region":"us-east-1","billing_plan_id":"bp_x","volume":{"size_gb":5},"data_controller":{"entity_name":"A","admin_email":"a@a.com"}}"#;

    #[test]
    fn errors_name_the_field() {
        assert!(parse_json::<HomeserverCreate>(GOOD.as_bytes()).is_ok());
        let e = err_of(&GOOD.replace("\"size_gb\":5", "\"size_gb\":5,\"encrypted\":false"));
        assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("volume.encrypted")));
        assert!(e.message.contains("R2"), "{}", e.message);
        let e = err_of(&GOOD.replace("us-east-1", "eu-west-1"));
        assert_eq!(e.field.as_deref(), Some("region"));
        assert!(!e.message.contains("line"), "{}", e.message);
        let e = err_of(&GOOD.replace("\"region\":\"us-east-1\",", ""));
        assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("region")));
        let e = err_of(&GOOD.replace("\"name\":\"a\"", "\"name\":\"a\",\"colour\":\"red\""));
        assert_eq!((e.status.as_u16(), e.code.as_str(), e.field.as_deref()), (400, "unknown_field", Some("colour")));
        let e = err_of("{\"name\":");
        assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "invalid_json"));
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_page_token("hs_abc");
        assert_eq!(decode_page_token(&t).unwrap(), "hs_abc");
        // Any token of the documented shape is a place to continue from; nothing else is.
        assert_eq!(decode_page_token("zz").unwrap(), "zz");
        for garbage in ["../../etc", "a b", "", "x'--"] {
            assert!(decode_page_token(garbage).is_err(), "{garbage}");
        }
    }
}
