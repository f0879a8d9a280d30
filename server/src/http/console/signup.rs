//! Sign-up (R14, R20, R21) and email verification (R15).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{self, checkbox, csrf_field, field, form_error, layout, FormErrors, NEW_PASSWORD_HINT};
use super::throttle::MAIL_PER_IP;
use super::{page, see_other, Ctx};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console/signup", get(show).post(submit))
        .route("/console/signup/sent", get(sent))
        .route("/console/verify", get(show_verify).post(verify))
        .route("/console/verify/resend", post(resend))
}

#[derive(Debug, Default, Deserialize)]
pub struct SignUpPost {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: crate::domain::accounts::SignUpForm,
}

fn form(ctx: &Ctx, terms_version: &str, values: &crate::domain::accounts::SignUpForm, errors: &FormErrors) -> Markup {
    layout(
        "Create your matrixhost account",
        &ctx.viewer(),
        html! {
            (form_error(errors))
            form method="post" action="/console/signup" novalidate {
                (csrf_field(&ctx.csrf))
                (field("email", "Email address", "email", &values.email, "email", Some("We send a link to verify it before you can subscribe."), errors))
                (field("full_name", "Your name", "text", &values.full_name, "name", None, errors))
                (field("organization", "Organization name", "text", &values.organization, "organization",
                    Some("Lower-case letters, digits and '-'; it appears in your homeservers' default addresses."), errors))
                (field("password", "Password", "password", "", "new-password",
                    Some(NEW_PASSWORD_HINT), errors))
                (checkbox("age_confirmed", html! { "I am at least 16 years old." }, values.age_confirmed.is_some(), errors))
                (checkbox("terms_accepted", html! { "I accept the matrixhost customer terms (version " (terms_version) ")." }, values.terms_accepted.is_some(), errors))
                button type="submit" { "Create account" }
            }
            p { "Already have an account? " a href="/console/login" { "Log in" } "." }
        },
    )
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let terms = &app.platform.settings.catalog.terms_version;
    page(StatusCode::OK, form(&ctx, terms, &Default::default(), &FormErrors::default()))
}

async fn submit(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<SignUpPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    let terms = &p.settings.catalog.terms_version;
    let key = format!("signup:ip:{}", ctx.ip);
    if let Err(wait) = app.throttle.check(&key, MAIL_PER_IP) {
        let errors = FormErrors::general(format!("Too many sign-ups from your network; try again in {} minutes.", wait.as_secs().div_ceil(60)));
        return page(StatusCode::TOO_MANY_REQUESTS, form(&ctx, terms, &post.form, &errors));
    }
    match p.accounts().sign_up(&post.form, p.clock.now()).await {
        Ok(()) => {
            app.throttle.record(&key);
            p.mail_queued();
            see_other("/console/signup/sent")
        }
        Err(errors) => page(StatusCode::UNPROCESSABLE_ENTITY, form(&ctx, terms, &post.form, &FormErrors::from_domain(errors))),
    }
}

/// The same page whether the address was new or already had an account.
async fn sent(Extension(ctx): Extension<Ctx>) -> Response {
    page(
        StatusCode::OK,
        layout(
            "Check your email",
            &ctx.viewer(),
            html! {
                (pages::notice("We sent a message to the address you gave. Follow its link to verify the address, then log in."))
                p { "The link works once, for 24 hours. No message? Check your spam folder, or " a href="/console/login" { "log in" } " and ask for another." }
            },
        ),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenPost {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub token: String,
}

async fn show_verify(Extension(ctx): Extension<Ctx>, Query(q): Query<TokenQuery>) -> Response {
    confirm_link_page(&ctx, "Verify your email address", "/console/verify", &q.token, "Verify my email address")
}

/// A mailed link opens a page with a button that posts its token: mail scanners that fetch
/// links do not use them up.
pub fn confirm_link_page(ctx: &Ctx, title: &str, action: &str, token: &str, button: &str) -> Response {
    page(
        StatusCode::OK,
        layout(
            title,
            &ctx.viewer(),
            html! {
                form method="post" action=(action) {
                    (csrf_field(&ctx.csrf))
                    input type="hidden" name="token" value=(token);
                    button type="submit" { (button) }
                }
            },
        ),
    )
}

pub fn invalid_link(ctx: &Ctx, what: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        layout(
            "This link does not work",
            &ctx.viewer(),
            html! {
                div class="error-summary" role="alert" {
                    p { "This " (what) " link has expired, was already used, or is not one we sent. Nothing was changed." }
                }
                p { a href="/console/login" { "Log in" } " to ask for a new one." }
            },
        ),
    )
}

async fn verify(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<TokenPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    match p.accounts().verify_email(&post.token, p.clock.now()).await {
        Ok(Some(_)) if ctx.signed_in.is_some() => see_other("/console?notice=verified"),
        Ok(Some(_)) => see_other("/console/login?notice=verified"),
        Ok(None) => invalid_link(&ctx, "verification"),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, layout("Verify your email address", &ctx.viewer(), form_error(&FormErrors::from_domain(vec![e])))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

async fn resend(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<CsrfOnly>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(redirect) => return *redirect,
    };
    let key = format!("verify:acct:{}", signed.account.id);
    if app.throttle.check(&key, MAIL_PER_IP).is_err() {
        return see_other("/console?notice=slow-down");
    }
    let p = &app.platform;
    match p.accounts().resend_verification(&signed.account, p.clock.now()).await {
        Ok(()) => {
            app.throttle.record(&key);
            p.mail_queued();
            see_other("/console?notice=verification-sent")
        }
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, layout("Verify your email address", &ctx.viewer(), form_error(&FormErrors::from_domain(vec![e])))),
    }
}
