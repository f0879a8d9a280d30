//! Log-in and log-out (R16), throttled per account and per address, and password reset through
//! a one-time link (R16). No answer tells whether an address has an account.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use axum_extra::extract::cookie::CookieJar;
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{self, csrf_field, field, form_error, layout, FormErrors, NewPasswordForm, NewPasswordPost};
use super::signup::{invalid_link, CsrfOnly, TokenQuery};
use super::throttle::{LOGIN_PER_ACCOUNT, LOGIN_PER_IP, MAIL_PER_IP, RESET_PER_ACCOUNT};
use super::{csrf_cookie, expired_cookie, page, see_other, session_cookie, Ctx, SESSION_COOKIE};
use crate::domain::{sessions, DomainError};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console/login", get(show).post(submit))
        .route("/console/logout", post(logout))
        .route("/console/reset", get(show_reset).post(request_reset))
        .route("/console/reset/sent", get(reset_sent))
        .route("/console/reset/confirm", get(show_confirm).post(confirm))
}

/// Fixed sentences shown after a redirect, by key (never text from the URL).
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "verified" => "Your email address is verified. Log in to continue.",
        "password-reset" => "Your password was changed and every session was logged out. Log in with the new password.",
        "logged-out" => "You are logged out.",
        "logged-out-everywhere" => "Every session was logged out, this one too.",
        "email-changed" => "Your email address was changed. Log in with the new address.",
        _ => return None,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    pub notice: String,
}

#[derive(Debug, Default, Deserialize)]
struct LoginPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn login_form(ctx: &Ctx, email: &str, errors: &FormErrors, notice: Option<&str>) -> Markup {
    layout(
        "Log in",
        &ctx.viewer(),
        html! {
            @if let Some(text) = notice { (pages::notice(text)) }
            (form_error(errors))
            form method="post" action="/console/login" novalidate {
                (csrf_field(&ctx.csrf))
                (field("email", "Email address", "email", email, "username", None, errors))
                (field("password", "Password", "password", "", "current-password", None, errors))
                button type="submit" { "Log in" }
            }
            p { a href="/console/reset" { "Forgot your password?" } " · " a href="/console/signup" { "Create an account" } }
        },
    )
}

async fn show(Extension(ctx): Extension<Ctx>, Query(q): Query<Notice>) -> Response {
    if ctx.signed_in.is_some() {
        return see_other("/console");
    }
    page(StatusCode::OK, login_form(&ctx, "", &FormErrors::default(), notice_text(&q.notice)))
}

async fn submit(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, jar: CookieJar, Form(post): Form<LoginPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    let account_key = format!("login:acct:{}", post.email.trim().to_ascii_lowercase());
    let ip_key = format!("login:ip:{}", ctx.ip);
    // The same answer for a known and an unknown address: both are counted.
    if let Err(wait) = app.throttle.check(&account_key, LOGIN_PER_ACCOUNT).and(app.throttle.check(&ip_key, LOGIN_PER_IP)) {
        tracing::warn!("console log-in throttled");
        let errors = FormErrors::general(format!("Too many failed log-ins. Try again in {} minutes, or reset your password.", wait.as_secs().div_ceil(60)));
        return page(StatusCode::TOO_MANY_REQUESTS, login_form(&ctx, &post.email, &errors, None));
    }
    let account = match p.accounts().check_password(&post.email, &post.password).await {
        Ok(Some(account)) => account,
        Ok(None) => {
            app.throttle.record(&account_key);
            app.throttle.record(&ip_key);
            tracing::info!("console log-in failed");
            let errors = FormErrors::general("The email address or the password is not right.");
            return page(StatusCode::UNAUTHORIZED, login_form(&ctx, &post.email, &errors, None));
        }
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, login_form(&ctx, &post.email, &FormErrors::from_domain(vec![e]), None)),
    };
    app.throttle.clear(&account_key);
    match sessions::start(&p.db, &p.sealer, &account.id, &ctx.user_agent, p.clock.now()).await {
        Ok(cookie) => {
            tracing::info!(account_id = %account.id, "console log-in");
            crate::http::note_org(&account.org_id);
            // A new CSRF token too: one planted before log-in is worthless after it.
            let (_, csrf) = csrf_cookie(p);
            (jar.add(session_cookie(p, cookie)).add(csrf), see_other("/console")).into_response()
        }
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, login_form(&ctx, &post.email, &FormErrors::from_domain(vec![e]), None)),
    }
}

async fn logout(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, jar: CookieJar, Form(post): Form<CsrfOnly>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    if let Some(s) = &ctx.signed_in {
        if let Err(e) = sessions::end(&p.db, &s.account.id, &s.session.id, p.clock.now()).await {
            tracing::warn!(error = %e, "could not end the session");
        }
    }
    let (_, csrf) = csrf_cookie(p);
    (jar.add(expired_cookie(p, SESSION_COOKIE)).add(csrf), see_other("/console/login?notice=logged-out")).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ResetPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

fn reset_form(ctx: &Ctx, email: &str, errors: &FormErrors) -> Markup {
    layout(
        "Reset your password",
        &ctx.viewer(),
        html! {
            (form_error(errors))
            p { "Enter the address of your account. We mail it a link to choose a new password." }
            form method="post" action="/console/reset" novalidate {
                (csrf_field(&ctx.csrf))
                (field("email", "Email address", "email", email, "username", None, errors))
                button type="submit" { "Send the link" }
            }
        },
    )
}

async fn show_reset(Extension(ctx): Extension<Ctx>) -> Response {
    page(StatusCode::OK, reset_form(&ctx, "", &FormErrors::default()))
}

async fn request_reset(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<ResetPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let ip_key = format!("reset:ip:{}", ctx.ip);
    let account_key = format!("reset:acct:{}", post.email.trim().to_ascii_lowercase());
    if let Err(wait) = app.throttle.check(&ip_key, MAIL_PER_IP).and(app.throttle.check(&account_key, RESET_PER_ACCOUNT)) {
        let errors = FormErrors::general(format!("Too many reset requests; try again in {} minutes.", wait.as_secs().div_ceil(60)));
        return page(StatusCode::TOO_MANY_REQUESTS, reset_form(&ctx, &post.email, &errors));
    }
    app.throttle.record(&ip_key);
    app.throttle.record(&account_key);
    let p = &app.platform;
    match p.accounts().request_reset(&post.email, p.clock.now()).await {
        Ok(()) => {
            p.mail_queued();
            see_other("/console/reset/sent")
        }
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, reset_form(&ctx, &post.email, &FormErrors::from_domain(vec![e]))),
    }
}

/// The same page whether or not the address has an account.
async fn reset_sent(Extension(ctx): Extension<Ctx>) -> Response {
    page(
        StatusCode::OK,
        layout(
            "Check your email",
            &ctx.viewer(),
            pages::notice("If that address has an account, we sent it a link to choose a new password. The link works once, for 1 hour."),
        ),
    )
}

fn confirm_form(ctx: &Ctx, token: &str, errors: &FormErrors) -> Markup {
    layout(
        "Choose a new password",
        &ctx.viewer(),
        html! {
            (NewPasswordForm { action: "/console/reset/confirm", token, label: "New password", button: "Set the new password" }.render(&ctx.csrf, errors))
            p { "Every session of the account is logged out when the password changes." }
        },
    )
}

async fn show_confirm(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<TokenQuery>) -> Response {
    let p = &app.platform;
    match crate::domain::account_links::is_usable(&p.db, &q.token, crate::domain::account_links::Purpose::ResetPassword, p.clock.now()).await {
        Ok(true) => page(StatusCode::OK, confirm_form(&ctx, &q.token, &FormErrors::default())),
        Ok(false) => invalid_link(&ctx, "password reset"),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, confirm_form(&ctx, "", &FormErrors::from_domain(vec![e]))),
    }
}

async fn confirm(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, jar: CookieJar, Form(post): Form<NewPasswordPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    match p.accounts().reset_password(&post.token, &post.password, p.clock.now()).await {
        Ok(Some(_)) => {
            p.mail_queued();
            (jar.add(expired_cookie(p, SESSION_COOKIE)), see_other("/console/login?notice=password-reset")).into_response()
        }
        Ok(None) => invalid_link(&ctx, "password reset"),
        Err(e @ DomainError::Invalid { .. }) => page(StatusCode::UNPROCESSABLE_ENTITY, confirm_form(&ctx, &post.token, &FormErrors::from_domain(vec![e]))),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, confirm_form(&ctx, &post.token, &FormErrors::from_domain(vec![e]))),
    }
}
