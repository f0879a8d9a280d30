//! The account page: correct the name (R18), change the password, change the email address
//! through the new address (R16), see and end sessions (R16), download every personal datum
//! as JSON and ask for erasure with a grace period (R18).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use axum_extra::extract::cookie::CookieJar;
use maud::{html, Markup};
use serde::Deserialize;

use super::login::Notice;
use super::pages::{self, csrf_field, field, field_with_id, form_error, layout, FormErrors};
use super::signup::{confirm_link_page, invalid_link, CsrfOnly, TokenPost, TokenQuery};
use super::{csrf_cookie, expired_cookie, page, see_other, session_cookie, Ctx, SignedIn, SESSION_COOKIE};
use crate::db::ts;
use crate::domain::{account_links, sessions, DomainError};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console/account", get(show))
        .route("/console/account/name", post(correct_name))
        .route("/console/account/password", post(change_password))
        .route("/console/account/email", post(change_email))
        .route("/console/email/confirm", get(show_confirm_email).post(confirm_email))
        .route("/console/sessions/end-all", post(end_all_sessions))
        .route("/console/sessions/{session_id}/end", post(end_session))
        .route("/console/account/export", get(export))
        .route("/console/account/delete", post(request_deletion))
        .route("/console/account/delete/cancel", post(cancel_deletion))
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "name-saved" => "Your name was saved.",
        "password-changed" => "Your password was changed. Every other session was logged out.",
        "email-sent" => "We sent a link to the new address. The change takes effect once you follow it (within 1 hour). Your current address was told.",
        "session-ended" => "The session was logged out.",
        "deletion-scheduled" => "Your account is scheduled for deletion. You can cancel it until then.",
        "deletion-cancelled" => "The deletion was cancelled. Nothing was erased.",
        _ => return None,
    })
}

/// Which form on the page the errors belong to.
#[derive(Default)]
struct PageErrors {
    name: FormErrors,
    password: FormErrors,
    email: FormErrors,
    delete: FormErrors,
}

async fn render(app: &App, ctx: &Ctx, signed: &SignedIn, notice: Option<&str>, errors: &PageErrors) -> Markup {
    let p = &app.platform;
    let a = &signed.account;
    let sessions = sessions::list(&p.db, &a.id, p.clock.now()).await.unwrap_or_default();
    layout(
        "Your account",
        &ctx.viewer(),
        html! {
            @if let Some(text) = notice { (pages::notice(text)) }
            @if let Some(due) = a.deletion_due_at {
                div class="warning" role="status" {
                    p { "This account and everything in it will be erased on " strong { (due.format("%Y-%m-%d %H:%M UTC")) } "." }
                    form method="post" action="/console/account/delete/cancel" {
                        (csrf_field(&ctx.csrf))
                        button type="submit" { "Cancel the deletion" }
                    }
                }
            }
            h2 { "Details" }
            dl {
                dt { "Email address" } dd { (a.email) @if a.email_verified_at.is_none() { " (not verified yet)" } }
                dt { "Organization" } dd { (a.org_name) }
                dt { "Customer terms accepted" } dd { "version " (a.terms_version) " on " (ts(a.terms_accepted_at)) }
                dt { "Age confirmed (16 or older)" } dd { (ts(a.age_confirmed_at)) }
            }
            h2 id="name" { "Correct your name" }
            (form_error(&errors.name))
            form method="post" action="/console/account/name" novalidate {
                (csrf_field(&ctx.csrf))
                (field("full_name", "Your name", "text", &a.full_name, "name", None, &errors.name))
                button type="submit" { "Save" }
            }
            h2 id="password" { "Change your password" }
            (form_error(&errors.password))
            form method="post" action="/console/account/password" novalidate {
                (csrf_field(&ctx.csrf))
                (field("current_password", "Current password", "password", "", "current-password", None, &errors.password))
                (field("new_password", "New password", "password", "", "new-password", Some("At least 12 characters. Every other session is logged out."), &errors.password))
                button type="submit" { "Change the password" }
            }
            h2 id="email" { "Change your email address" }
            (form_error(&errors.email))
            form method="post" action="/console/account/email" novalidate {
                (csrf_field(&ctx.csrf))
                (field("new_email", "New email address", "email", "", "email", Some("We mail a link to the new address; the change takes effect when you follow it."), &errors.email))
                (field_with_id("email-current_password", "current_password", "Current password", "password", "", "current-password", None, &errors.email))
                button type="submit" { "Send the confirmation link" }
            }
            h2 id="sessions" { "Sessions" }
            table {
                caption class="visually-hidden" { "Your logged-in sessions" }
                thead { tr { th scope="col" { "Browser" } th scope="col" { "Logged in" } th scope="col" { "Last active" } th scope="col" { span class="visually-hidden" { "Action" } } } }
                tbody {
                    @for s in &sessions {
                        tr {
                            td { (s.user_agent) @if s.id == signed.session.id { " (this session)" } }
                            td { (ts(s.created_at)) }
                            td { (ts(s.last_seen_at)) }
                            td {
                                form method="post" action={ "/console/sessions/" (s.id) "/end" } class="inline" {
                                    (csrf_field(&ctx.csrf))
                                    button type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/console/sessions/end-all" {
                (csrf_field(&ctx.csrf))
                button type="submit" { "Log out everywhere" }
            }
            h2 id="data" { "Your data" }
            p { "Download, as JSON, everything we hold about you: the account, the organization, billing records, homeserver settings, tokens (never their secrets), sessions, mail we sent and the access log of your requests with IP addresses (kept 30 days)." }
            p { a href="/console/account/export" download="matrixhost-export.json" { "Download my data" } }
            @if a.deletion_due_at.is_none() {
                h2 id="delete" { "Delete the account" }
                p { "Your homeservers, their volumes and backups, and every record about you are erased after a 7-day grace period, during which you can cancel." }
                (form_error(&errors.delete))
                form method="post" action="/console/account/delete" novalidate {
                    (csrf_field(&ctx.csrf))
                    (field("confirm", "Type the organization's name to confirm", "text", "", "off", Some(&a.org_name), &errors.delete))
                    (field_with_id("delete-current_password", "current_password", "Current password", "password", "", "current-password", None, &errors.delete))
                    button type="submit" class="danger" { "Delete my account" }
                }
            }
        },
    )
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<Notice>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(redirect) => return *redirect,
    };
    page(StatusCode::OK, render(&app, &ctx, signed, notice_text(&q.notice), &PageErrors::default()).await)
}

/// A form on the page failed: the page again, with the errors next to that form's fields.
async fn failed(app: &App, ctx: &Ctx, signed: &SignedIn, e: DomainError, place: fn(&mut PageErrors) -> &mut FormErrors) -> Response {
    let status = match e {
        DomainError::Invalid { .. } | DomainError::Conflict { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut errors = PageErrors::default();
    *place(&mut errors) = FormErrors::from_domain(vec![e]);
    page(status, render(app, ctx, signed, None, &errors).await)
}

#[derive(Debug, Default, Deserialize)]
struct NamePost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    full_name: String,
}

async fn correct_name(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<NamePost>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match p.accounts().correct_name(&signed.account, &post.full_name, p.clock.now()).await {
        Ok(()) => see_other("/console/account?notice=name-saved"),
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.name).await,
    }
}

#[derive(Debug, Default, Deserialize)]
struct PasswordPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, jar: CookieJar, Form(post): Form<PasswordPost>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    let now = p.clock.now();
    if let Err(e) = p.accounts().change_password(&signed.account, &post.current_password, &post.new_password, now).await {
        return failed(&app, &ctx, signed, e, |e| &mut e.password).await;
    }
    p.mail_queued();
    // Every session ended; this browser gets a new one.
    match sessions::start(&p.db, &p.sealer, &signed.account.id, &ctx.user_agent, now).await {
        Ok(cookie) => (jar.add(session_cookie(p, cookie)), see_other("/console/account?notice=password-changed")).into_response(),
        Err(_) => (jar.add(expired_cookie(p, SESSION_COOKIE)), see_other("/console/login")).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct EmailPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_email: String,
    #[serde(default)]
    current_password: String,
}

async fn change_email(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<EmailPost>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match p.accounts().request_email_change(&signed.account, &post.new_email, &post.current_password, p.clock.now()).await {
        Ok(()) => {
            p.mail_queued();
            see_other("/console/account?notice=email-sent")
        }
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.email).await,
    }
}

async fn show_confirm_email(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<TokenQuery>) -> Response {
    let p = &app.platform;
    if !account_links::is_usable(&p.db, &q.token, account_links::Purpose::ChangeEmail, p.clock.now()).await.unwrap_or(false) {
        return invalid_link(&ctx, "email change");
    }
    confirm_link_page(&ctx, "Confirm your new email address", "/console/email/confirm", &q.token, "Make this my address")
}

async fn confirm_email(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<TokenPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    match p.accounts().confirm_email_change(&post.token, p.clock.now()).await {
        Ok(Some(_)) => {
            p.mail_queued();
            see_other(if ctx.signed_in.is_some() { "/console/account?notice=email-changed" } else { "/console/login?notice=email-changed" })
        }
        Ok(None) => invalid_link(&ctx, "email change"),
        Err(e) => page(StatusCode::CONFLICT, layout("Confirm your new email address", &ctx.viewer(), form_error(&FormErrors::from_domain(vec![e])))),
    }
}

async fn end_all_sessions(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, jar: CookieJar, Form(post): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    if let Err(e) = sessions::end_all(&p.db, &signed.account.id, p.clock.now()).await {
        return failed(&app, &ctx, signed, e, |e| &mut e.name).await;
    }
    tracing::info!(account_id = %signed.account.id, "every session logged out");
    let (_, csrf) = csrf_cookie(p);
    (jar.add(expired_cookie(p, SESSION_COOKIE)).add(csrf), see_other("/console/login?notice=logged-out-everywhere")).into_response()
}

async fn end_session(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(session_id): Path<String>, Form(post): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match sessions::end(&p.db, &signed.account.id, &session_id, p.clock.now()).await {
        Ok(()) if session_id == signed.session.id => see_other("/console/login?notice=logged-out"),
        Ok(()) => see_other("/console/account?notice=session-ended"),
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.name).await,
    }
}

/// R18: the download. A GET that changes nothing; the session cookie is SameSite=Lax, so
/// another site cannot read the answer.
async fn export(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match p.accounts().export(&signed.account, p.clock.now()).await {
        Ok(data) => {
            tracing::info!(account_id = %signed.account.id, "personal data exported");
            let body = serde_json::to_string_pretty(&data).unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"matrixhost-export.json\""),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.name).await,
    }
}

#[derive(Debug, Default, Deserialize)]
struct DeletePost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    current_password: String,
}

async fn request_deletion(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<DeletePost>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match p.accounts().request_deletion(&signed.account, &post.current_password, &post.confirm, p.clock.now()).await {
        Ok(_) => {
            p.mail_queued();
            see_other("/console/account?notice=deletion-scheduled")
        }
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.delete).await,
    }
}

async fn cancel_deletion(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match p.accounts().cancel_deletion(&signed.account, p.clock.now()).await {
        Ok(()) => {
            p.mail_queued();
            see_other("/console/account?notice=deletion-cancelled")
        }
        Err(e) => failed(&app, &ctx, signed, e, |e| &mut e.delete).await,
    }
}
