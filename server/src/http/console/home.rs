//! The console's front page (the organization and its homeservers) and a homeserver's page:
//! status, resource usage as gauges (R23: counts and sizes, never contents) and its events.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use maud::html;

use super::login::Notice;
use super::pages::{self, csrf_field, gauge, layout};
use super::{page, Ctx};
use crate::db::ts;
use crate::domain::{events, homeservers, PageRequest};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/console", get(dashboard)).route("/console/homeservers/{homeserver_id}", get(homeserver))
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "verified" => "Your email address is verified. You can subscribe to a billing plan now.",
        "verification-sent" => "We sent a new verification link to your address.",
        "slow-down" => "A verification link was sent recently; check your mail before asking again.",
        _ => return None,
    })
}

async fn dashboard(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<Notice>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let a = &signed.account;
    let all = homeservers::list(&app.platform.db, &a.org_id, None, PageRequest { after: "", fetch: 200 }).await.unwrap_or_default();
    page(
        StatusCode::OK,
        layout(
            &format!("Organization {}", a.org_name),
            &ctx.viewer(),
            html! {
                @if let Some(text) = notice_text(&q.notice) { (pages::notice(text)) }
                @if a.email_verified_at.is_none() {
                    div class="warning" role="status" {
                        p { "Your email address " strong { (a.email) } " is not verified yet. Verify it before you subscribe to a billing plan (R15)." }
                        form method="post" action="/console/verify/resend" {
                            (csrf_field(&ctx.csrf))
                            button type="submit" { "Send a new verification link" }
                        }
                    }
                }
                @if let Some(due) = a.deletion_due_at {
                    div class="warning" role="status" {
                        p { "This account is scheduled for erasure on " (due.format("%Y-%m-%d %H:%M UTC")) ". " a href="/console/account#delete" { "Cancel it on the account page" } "." }
                    }
                }
                h2 { "Homeservers" }
                @if all.is_empty() {
                    p { "No homeservers yet. Create one with Terraform: make an " a href="/console/tokens" { "API token" } ", then apply a " code { "matrixhost_homeserver" } "." }
                } @else {
                    table {
                        caption class="visually-hidden" { "Your homeservers" }
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Server name" } th scope="col" { "Region" } th scope="col" { "Status" } } }
                        tbody {
                            @for hs in &all {
                                tr {
                                    td { a href={ "/console/homeservers/" (hs.id) } { (hs.name.as_str()) } }
                                    td { (hs.server_name.as_str()) }
                                    td { (hs.region.as_str()) }
                                    td { (hs.status.as_str()) }
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn homeserver(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(id): Path<String>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    let org_id = &signed.account.org_id;
    let found = async {
        let mut tx = p.db.begin().await?;
        homeservers::load(&mut tx, org_id, &id).await
    }
    .await;
    let Ok(Some(hs)) = found else {
        return page(StatusCode::NOT_FOUND, layout("Homeserver not found", &ctx.viewer(), html! { p { "No homeserver of yours has that id." } }));
    };
    let usage = super::super::homeservers::measure_usage(&app, org_id, &hs.id).await;
    let recent = events::list(&p.db, org_id, &hs.id, PageRequest { after: "", fetch: 20 }).await.unwrap_or_default();
    page(
        StatusCode::OK,
        layout(
            &format!("Homeserver {}", hs.name.as_str()),
            &ctx.viewer(),
            html! {
                dl {
                    dt { "Status" } dd { strong { (hs.status.as_str()) } @if let Some(reason) = &hs.status_reason { " — " (reason) } }
                    dt { "Server name" } dd { (hs.server_name.as_str()) }
                    dt { "Region" } dd { (hs.region.as_str()) }
                    @if let Some(url) = &hs.client_url { dt { "Client URL" } dd { (url) } }
                    dt { "Federation" } dd { @if hs.federation_enabled { "on" } @else { "off" } }
                    dt { "Customer terms" } dd { "version " (hs.terms_version) ", accepted " (ts(hs.terms_accepted_at)) }
                }
                h2 { "Resource usage" }
                @match &usage {
                    Ok(u) => {
                        (gauge("Monthly active users", u.monthly_active_users as f64, f64::from(u.mau_cap), &format!("{} of {}", u.monthly_active_users, u.mau_cap)))
                        (gauge("Storage", mib(u.volume_bytes_used), mib(u.volume_size_bytes), &format!("{:.1} MiB of {:.0} MiB", mib(u.volume_bytes_used), mib(u.volume_size_bytes))))
                        p { (u.registered_users) " registered users. Measured " (ts(u.measured_at)) "." }
                    }
                    Err(e) => { p { "Usage is not available: " (e.message) } }
                }
                h2 { "Recent events" }
                @if recent.is_empty() { p { "Nothing has happened to this homeserver." } } @else {
                    ul { @for e in &recent { li { (ts(e.occurred_at)) ": " (e.message) } } }
                }
            },
        ),
    )
}
