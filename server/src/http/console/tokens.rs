//! API tokens from the console: create (named, with an optional expiry), list and revoke. A
//! token is shown once, on the page that created it; only its hash is kept. The Terraform
//! provider and the API take these tokens like the operator's.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::Duration;
use maud::{html, Markup};
use serde::Deserialize;

use super::login::Notice;
use super::pages::{self, csrf_field, field, form_error, layout, FormErrors};
use super::signup::CsrfOnly;
use super::{page, see_other, Ctx, SignedIn};
use crate::domain::{orgs, DomainError};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/console/tokens", get(show).post(create)).route("/console/tokens/{token_id}/revoke", post(revoke))
}

/// The expiries offered, in days; 0 is "never".
const EXPIRIES: [(u32, &str); 5] = [(7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "1 year"), (0, "Never (until revoked)")];
/// The expiry chosen unless the customer picks another.
const DEFAULT_EXPIRY_DAYS: u32 = 90;

#[derive(Debug, Default, Deserialize)]
struct CreatePost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in_days: String,
}

/// A token name: 1-100 printable characters.
fn parse_name(s: &str) -> Result<String, DomainError> {
    let name = s.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DomainError::field("name", "give the token a name of 1-100 characters, e.g. `terraform ci`"));
    }
    Ok(name.to_owned())
}

fn parse_expiry(s: &str) -> Result<Option<Duration>, DomainError> {
    match s.parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(days) if EXPIRIES.iter().any(|(d, _)| *d == days) => Ok(Some(Duration::days(i64::from(days)))),
        _ => Err(DomainError::field("expires_in_days", "choose one of the offered expiries")),
    }
}

async fn render(app: &App, ctx: &Ctx, signed: &SignedIn, created: Option<(&str, &str)>, errors: &FormErrors, notice: Option<&str>) -> Markup {
    let tokens = orgs::list_tokens(&app.platform.db, &signed.account.org_id).await.unwrap_or_default();
    let now = crate::db::ts(app.platform.clock.now());
    layout(
        "API tokens",
        &ctx.viewer(),
        html! {
            @if let Some(text) = notice { (pages::notice(text)) }
            @if let Some((name, secret)) = created {
                div class="notice" role="status" {
                    p { "Your new token “" (name) "” is below. Copy it now: it is shown only once." }
                    p class="secret" id="new-token" { (secret) }
                    p { "Use it as " code { "MATRIXHOST_TOKEN" } " for the Terraform provider, or as " code { "Authorization: Bearer …" } " for the API." }
                }
            }
            h2 { "Create a token" }
            (form_error(errors))
            form method="post" action="/console/tokens" novalidate {
                (csrf_field(&ctx.csrf))
                (field("name", "Name", "text", "", "off", Some("What uses it, e.g. terraform ci."), errors))
                div class={ "field" @if errors.get("expires_in_days").is_some() { " has-error" } } {
                    label for="expires_in_days" { "Expires after" }
                    @if let Some(error) = errors.get("expires_in_days") {
                        p class="field-error" id="expires_in_days-error" { span class="visually-hidden" { "Error: " } (error) }
                    }
                    select id="expires_in_days" name="expires_in_days" aria-describedby=[errors.get("expires_in_days").map(|_| "expires_in_days-error")] {
                        @for (days, label) in EXPIRIES { option value=(days) selected[days == DEFAULT_EXPIRY_DAYS] { (label) } }
                    }
                }
                button type="submit" { "Create token" }
            }
            h2 { "Your tokens" }
            @if tokens.is_empty() { p { "No tokens yet." } } @else {
                table {
                    caption class="visually-hidden" { "Your organization's API tokens" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { span class="visually-hidden" { "Action" } } } }
                    tbody {
                        @for t in &tokens {
                            @let expired = t.expires_at.as_deref().is_some_and(|e| e <= now.as_str());
                            tr {
                                td { (t.description) }
                                td { (t.created_at) }
                                td { (t.last_used_at.as_deref().unwrap_or("never")) }
                                td { (t.expires_at.as_deref().unwrap_or("never")) }
                                td { @if t.revoked_at.is_some() { "revoked" } @else if expired { "expired" } @else { "active" } }
                                td {
                                    @if t.revoked_at.is_none() && !expired {
                                        form method="post" action={ "/console/tokens/" (t.id) "/revoke" } class="inline" {
                                            (csrf_field(&ctx.csrf))
                                            button type="submit" aria-label={ "Revoke " (t.description) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<Notice>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let notice = (q.notice == "revoked").then_some("The token was revoked; it no longer works.");
    page(StatusCode::OK, render(&app, &ctx, signed, None, &FormErrors::default(), notice).await)
}

async fn create(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<CreatePost>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    let now = p.clock.now();
    let parsed = parse_name(&post.name).and_then(|name| Ok((name, parse_expiry(&post.expires_in_days)?)));
    let (name, expiry) = match parsed {
        Ok(v) => v,
        Err(e) => return page(StatusCode::UNPROCESSABLE_ENTITY, render(&app, &ctx, signed, None, &FormErrors::from_domain(vec![e]), None).await),
    };
    match orgs::create_expiring_token(&p.db, &signed.account.org_id, &name, expiry.map(|d| now + d), now).await {
        Ok((id, secret)) => {
            tracing::info!(token_id = %id, account_id = %signed.account.id, "API token created in the console");
            page(StatusCode::CREATED, render(&app, &ctx, signed, Some((&name, &secret)), &FormErrors::default(), None).await)
        }
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, render(&app, &ctx, signed, None, &FormErrors::from_domain(vec![e]), None).await),
    }
}

async fn revoke(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(token_id): Path<String>, Form(post): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&post.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    match orgs::revoke_token(&p.db, Some(&signed.account.org_id), &token_id, p.clock.now()).await {
        Ok(()) => {
            tracing::info!(token_id = %token_id, "API token revoked in the console");
            see_other("/console/tokens?notice=revoked")
        }
        Err(e) => page(StatusCode::NOT_FOUND, render(&app, &ctx, signed, None, &FormErrors::from_domain(vec![e]), None).await),
    }
}
