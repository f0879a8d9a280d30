//! The customer console: server-rendered HTML forms that work without JavaScript, served by
//! matrixhostd itself under `/console`.
//!
//! Every console request passes through [`console_context`]: it finds the session (R16), makes
//! sure the browser has a CSRF cookie, re-signs a session cookie whose key is no longer the
//! newest, and sets the headers that keep pages out of caches, frames and referrers (the
//! one-time links carry their token in the URL). Every form posts a `csrf` field that must
//! equal the browser's CSRF cookie (double submit; the cookie is HttpOnly and SameSite=Lax).

mod account;
mod billing;
mod home;
mod invite;
mod login;
mod pages;
mod signup;
mod throttle;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use maud::html;
use subtle::ConstantTimeEq;

pub use throttle::Throttle;

use super::App;
use crate::domain::accounts::Account;
use crate::domain::sessions::{self, Session};
use crate::platform::Platform;

pub const SESSION_COOKIE: &str = "mh_session";
pub const CSRF_COOKIE: &str = "mh_csrf";

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let pages = Router::new()
        .merge(signup::routes())
        .merge(login::routes())
        .merge(account::routes())
        .merge(billing::routes())
        .merge(tokens::routes())
        .merge(home::routes())
        .merge(invite::routes())
        .route("/console/style.css", get(style));
    Router::new().route("/", get(|| async { Redirect::to("/console") })).merge(pages.route_layer(axum::middleware::from_fn_with_state(app, console_context)))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], pages::STYLE).into_response()
}

/// What every console handler knows about the request.
#[derive(Clone)]
pub struct Ctx {
    pub csrf: String,
    pub ip: String,
    pub user_agent: String,
    pub signed_in: Option<SignedIn>,
}

#[derive(Clone)]
pub struct SignedIn {
    pub session: Session,
    pub account: Account,
}

impl Ctx {
    pub fn viewer(&self) -> pages::Viewer<'_> {
        pages::Viewer { email: self.signed_in.as_ref().map(|s| s.account.email.as_str()), csrf: &self.csrf }
    }

    /// The signed-in customer, or a redirect to the log-in page.
    pub fn customer(&self) -> Result<&SignedIn, Box<Response>> {
        self.signed_in.as_ref().ok_or_else(|| Box::new(Redirect::to("/console/login").into_response()))
    }

    /// A form posted by the signed-in customer: the CSRF check, then the session.
    pub fn customer_form(&self, csrf: &str) -> Result<&SignedIn, Box<Response>> {
        self.check_csrf(csrf)?;
        self.customer()
    }

    /// CSRF: the form's token must equal the browser's cookie (compared in constant time).
    pub fn check_csrf(&self, submitted: &str) -> Result<(), Box<Response>> {
        if !submitted.is_empty() && bool::from(submitted.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Ok(());
        }
        tracing::warn!("console form refused: CSRF token missing or wrong");
        let body = pages::layout(
            "This form has expired",
            &self.viewer(),
            html! {
                div class="error-summary" role="alert" {
                    p { "The form was sent without its security token, or from another site. Nothing was changed." }
                    p { "Go back, reload the page and try again." }
                }
            },
        );
        Err(Box::new((StatusCode::FORBIDDEN, body).into_response()))
    }
}

fn base_cookie(platform: &Platform, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value)).path("/").http_only(true).same_site(SameSite::Lax).secure(platform.console_is_https()).build()
}

/// A cookie that tells the browser to forget `name`.
pub fn expired_cookie(platform: &Platform, name: &'static str) -> Cookie<'static> {
    let mut c = base_cookie(platform, name, String::new());
    c.make_removal();
    c
}

/// The session cookie for a new session (R16: HttpOnly, SameSite=Lax, Secure behind HTTPS).
/// It lives as long as the session may; the server ends it sooner when asked.
pub fn session_cookie(platform: &Platform, value: String) -> Cookie<'static> {
    let mut c = base_cookie(platform, SESSION_COOKIE, value);
    c.set_max_age(cookie::time::Duration::seconds(sessions::LIFETIME.num_seconds()));
    c
}

/// A fresh CSRF cookie (at log-in and log-out, so a token planted earlier is worthless).
pub fn csrf_cookie(platform: &Platform) -> (String, Cookie<'static>) {
    let token = crate::domain::orgs::generate_secret();
    (token.clone(), base_cookie(platform, CSRF_COOKIE, token))
}

fn sets_cookie(response: &Response, name: &str) -> bool {
    response.headers().get_all(header::SET_COOKIE).iter().any(|v| v.to_str().is_ok_and(|v| v.starts_with(&format!("{name}="))))
}

async fn console_context(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let p = &app.platform;
    let jar = CookieJar::from_headers(req.headers());
    let now = p.clock.now();
    let signed_in = match jar.get(SESSION_COOKIE) {
        Some(c) => match find_session(&app, c.value(), now).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "could not check a console session");
                None
            }
        },
        None => None,
    };
    if let Some(s) = &signed_in {
        super::note_org(&s.account.org_id);
    }
    let (csrf, new_csrf) = match jar.get(CSRF_COOKIE).map(|c| c.value().to_owned()).filter(|v| v.len() == 64) {
        Some(existing) => (existing, None),
        None => {
            let (token, cookie) = csrf_cookie(p);
            (token, Some(cookie))
        }
    };
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let resigned = signed_in.as_ref().and_then(|s| s.session.resigned.clone());
    req.extensions_mut().insert(Ctx { csrf, ip, user_agent, signed_in });
    let mut response = next.run(req).await;
    let mut add = Vec::new();
    if let Some(c) = new_csrf.filter(|_| !sets_cookie(&response, CSRF_COOKIE)) {
        add.push(c);
    }
    if let Some(value) = resigned.filter(|_| !sets_cookie(&response, SESSION_COOKIE)) {
        add.push(session_cookie(p, value));
    }
    let headers = response.headers_mut();
    for c in add {
        if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

async fn find_session(app: &App, cookie: &str, now: chrono::DateTime<chrono::Utc>) -> crate::domain::DomainResult<Option<SignedIn>> {
    let p = &app.platform;
    let Some(session) = sessions::authenticate(&p.db, &p.sealer, cookie, now).await? else { return Ok(None) };
    let account = p.accounts().get(&session.account_id).await?;
    Ok(Some(SignedIn { session, account }))
}

/// A page answer with its status.
pub fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, markup).into_response()
}

/// Where to go after a successful form: the page, with a notice.
pub fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}
