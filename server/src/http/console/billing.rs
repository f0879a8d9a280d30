//! The billing page (R10-R13): the card on file, entered only into Stripe.js (the number goes
//! from the browser to Stripe; matrixhost gets a payment-method id, the brand and the last four
//! digits), the billing contact and the log of its changes, the subscriptions with their
//! upcoming charges, and the invoices: pay an open one, or open it through a link that is
//! unguessable, expiring and never indexed.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::login::Notice;
use super::pages::{self, csrf_field, field, form_error, layout, FormErrors};
use super::signup::CsrfOnly;
use super::{page, see_other, Ctx, SignedIn};
use crate::db::ts;
use crate::domain::billing_profiles::{self, Contact};
use crate::domain::{billing_plans, invoices, DomainError, PageRequest};
use crate::http::App;
use crate::stripe_api::Invoice;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console/billing", get(show))
        .route("/console/billing/card", post(save_card))
        .route("/console/billing/card/intent", post(card_intent))
        .route("/console/billing/contact", post(save_contact))
        .route("/console/billing/invoices/{invoice_id}/pay", post(pay_invoice))
        .route("/console/billing/invoices/{invoice_id}/link", post(invoice_link))
        .route("/console/billing.js", get(script))
        .route("/invoices/{token}", get(show_invoice))
        .route("/robots.txt", get(robots))
}

/// R13: crawlers keep out of invoices (and the console) even if a link leaks.
async fn robots() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "User-agent: *\nDisallow: /invoices/\nDisallow: /console/\n").into_response()
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "card-saved" => "Your card was saved. Payments are taken from it from now on.",
        "contact-saved" => "The billing contact was saved. The change is in the log below.",
        "contact-unchanged" => "The billing contact was already like that; nothing changed.",
        "invoice-paid" => "The invoice is paid. A homeserver that was blocked for it unblocks within a minute.",
        _ => return None,
    })
}

#[derive(Default)]
struct PageErrors {
    card: FormErrors,
    contact: FormErrors,
    invoices: FormErrors,
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "−" } else { "" };
    format!("{sign}${}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn day(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The origin Stripe.js comes from (and talks to): what the page's policy lets in.
fn stripe_origin(js_url: &str) -> String {
    let after_scheme = js_url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = js_url[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(js_url.len());
    js_url[..end].to_owned()
}

/// The card form's publishable key, when this customer may enter a card at all.
fn card_form_key<'a>(app: &'a App, signed: &SignedIn) -> Option<&'a str> {
    let p = &app.platform;
    let settings = p.settings.stripe.as_ref().filter(|_| p.stripe.is_some())?;
    signed.account.email_verified_at.is_some().then_some(settings.publishable_key.as_str())
}

/// A SetupIntent for the card form, which Stripe.js confirms with what the customer types. It
/// is made when the form is sent, not when the page is shown: viewing the page calls Stripe for
/// nothing and leaves neither unused intents nor a Stripe customer behind.
async fn card_setup(app: &App, signed: &SignedIn) -> Result<String, DomainError> {
    let p = &app.platform;
    let Some(stripe) = &p.stripe else { return Err(DomainError::field("card", "this installation takes no payments")) };
    if card_form_key(app, signed).is_none() {
        return Err(DomainError::field("card", "verify your email address first (R15)"));
    }
    let customer = billing_profiles::ensure_customer_committed(&p.db, stripe, &signed.account.org_id, p.clock.now()).await?;
    let intent = stripe.create_setup_intent(&customer).await.map_err(|e| DomainError::from_stripe("card", e))?;
    Ok(intent.client_secret)
}

/// The card form's first step, called by its script: the client secret of a fresh SetupIntent,
/// or what went wrong in words. Never cached: the secret lets whoever holds it confirm the intent.
async fn card_intent(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(form): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (status, body) = match card_setup(&app, signed).await {
        Ok(client_secret) => (StatusCode::OK, serde_json::json!({ "client_secret": client_secret })),
        Err(e) => {
            let message = said_above(e).0.into_values().next().unwrap_or_default();
            (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "message": message }))
        }
    };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

struct Upcoming {
    plan_id: String,
    due: chrono::DateTime<chrono::Utc>,
    invoice: Invoice,
}

async fn upcoming_charges(app: &App, org_id: &str, customer: Option<&str>) -> Vec<Upcoming> {
    let p = &app.platform;
    let (Some(stripe), Some(customer)) = (&p.stripe, customer) else { return vec![] };
    let plans = billing_plans::stripe_links(&p.db, org_id, p.clock.now()).await.unwrap_or_default();
    let mut out = Vec::new();
    for (plan_id, due, subscription) in plans {
        match stripe.upcoming_invoice(customer, &subscription).await {
            Ok(invoice) => out.push(Upcoming { plan_id, due, invoice }),
            Err(e) => tracing::warn!(error = %e, "could not read an upcoming invoice"),
        }
    }
    out
}

async fn render(app: &App, ctx: &Ctx, signed: &SignedIn, notice: Option<&str>, errors: &PageErrors) -> Response {
    let p = &app.platform;
    let org_id = &signed.account.org_id;
    let loaded = async {
        let mut tx = p.db.begin().await?;
        let profile = billing_profiles::get(&mut tx, org_id).await?;
        let invoices = invoices::list(&mut tx, org_id, 50).await?;
        let changes = billing_profiles::contact_changes(&mut tx, org_id).await?;
        Ok::<_, DomainError>((profile, invoices, changes))
    }
    .await;
    let (profile, invoice_list, changes) = match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "billing page");
            return page(StatusCode::INTERNAL_SERVER_ERROR, layout("Billing", &ctx.viewer(), html! { p { "The billing page is not available right now; try again." } }));
        }
    };
    let plans = billing_plans::list(&p.db, org_id, PageRequest { after: "", fetch: 100 }, p.clock.now(), &p.settings.catalog).await.unwrap_or_default();
    let card_key = card_form_key(app, signed);
    let upcoming = upcoming_charges(app, org_id, profile.stripe_customer_id.as_deref()).await;
    let js_url = p.settings.stripe.as_ref().map(|s| s.js_url.clone());
    let body = layout(
        "Billing",
        &ctx.viewer(),
        html! {
            @if let Some(text) = notice { (pages::notice(text)) }
            h2 id="card" { "Payment method" }
            p id="card-on-file" {
                @match &profile.card {
                    Some(card) => { "Payments are taken from your " strong { (card.brand) " card ending in " (card.last4) } "." }
                    None => { "No card on file yet. Billing plans are paid in advance, so add one before you subscribe." }
                }
            }
            (form_error(&errors.card))
            @if let Some(publishable_key) = card_key {
                form id="card-form" method="post" action="/console/billing/card" data-intent-url="/console/billing/card/intent" data-publishable-key=(publishable_key) {
                    (csrf_field(&ctx.csrf))
                    input type="hidden" name="setup_intent" value="";
                    p { "Card details go straight to our payment processor, Stripe; they never reach matrixhost. We keep the brand and the last four digits." }
                    div id="card-element" class="card-element" {}
                    p id="card-errors" class="field-error" role="alert" aria-live="polite" {}
                    button type="submit" { @if profile.card.is_some() { "Replace the card" } @else { "Save the card" } }
                }
            } @else if signed.account.email_verified_at.is_none() {
                p { "Verify your email address first (R15)." }
            } @else if p.stripe.is_none() {
                p { "This installation takes no payments: billing plans are recorded, not charged." }
            }

            h2 id="subscriptions" { "Subscriptions" }
            @if plans.is_empty() {
                p { "No billing plans yet." }
            } @else {
                table {
                    caption class="visually-hidden" { "Your billing plans" }
                    thead { tr { th scope="col" { "Plan" } th scope="col" { "In force" } th scope="col" { "Status" } th scope="col" { "MAU cap" } th scope="col" { "Paid until" } } }
                    tbody {
                        @for bp in &plans {
                            tr {
                                td { (bp.id) }
                                td { (bp.active_plan) @if let Some(pending) = &bp.pending_plan { " (" (pending) " from " (ts(bp.current_period_end)) ")" } }
                                td { @if bp.status.as_str() == "past_due" { strong { "payment failed: homeservers on it are blocked until it is paid" } } @else { "paid" } }
                                td { (bp.mau_cap) }
                                td { (ts(bp.current_period_end)) }
                            }
                        }
                    }
                }
            }
            h2 id="upcoming" { "Upcoming charges" }
            @if upcoming.is_empty() {
                p { "Nothing is due." }
            } @else {
                @for u in &upcoming {
                    section class="upcoming" {
                        h3 { (u.plan_id) ": " (money(u.invoice.amount_due)) " on " (ts(u.due)) }
                        ul { @for line in &u.invoice.lines.data { li { (line.description.as_deref().unwrap_or("")) ": " (money(line.amount)) } } }
                    }
                }
            }
            h2 id="invoices" { "Invoices" }
            (form_error(&errors.invoices))
            @if invoice_list.is_empty() {
                p { "No invoices yet." }
            } @else {
                table {
                    caption class="visually-hidden" { "Your invoices" }
                    thead { tr { th scope="col" { "Date" } th scope="col" { "Total" } th scope="col" { "Status" } th scope="col" { span class="visually-hidden" { "Actions" } } } }
                    tbody {
                        @for inv in &invoice_list {
                            tr {
                                td { (inv.created_at.format("%Y-%m-%d")) }
                                td { (money(inv.total_cents)) }
                                td { (inv.status) }
                                td {
                                    form method="post" action={ "/console/billing/invoices/" (inv.id) "/link" } class="inline" {
                                        (csrf_field(&ctx.csrf))
                                        button type="submit" { "View" }
                                    }
                                    @if inv.status == "open" {
                                        form method="post" action={ "/console/billing/invoices/" (inv.id) "/pay" } class="inline" {
                                            (csrf_field(&ctx.csrf))
                                            button type="submit" { "Pay " (money(inv.amount_due_cents)) " now" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 id="contact" { "Billing contact" }
            (form_error(&errors.contact))
            form method="post" action="/console/billing/contact" novalidate {
                (csrf_field(&ctx.csrf))
                (field("contact_name", "Name", "text", profile.contact_name.as_deref().unwrap_or(""), "name", None, &errors.contact))
                (field("contact_email", "Email address for invoices", "email", profile.contact_email.as_deref().unwrap_or(""), "email", Some("Every change is logged with who made it and when (R13)."), &errors.contact))
                button type="submit" { "Save the billing contact" }
            }
            @if !changes.is_empty() {
                table id="contact-log" {
                    caption { "Changes to the billing contact" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody {
                        @for c in &changes {
                            tr {
                                td { (ts(c.changed_at)) }
                                td { (c.changed_by) }
                                td { (c.field) }
                                td { (c.old_value.as_deref().unwrap_or("—")) }
                                td { (c.new_value.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
            @if let (Some(js), Some(_)) = (&js_url, card_key) {
                script src=(js) {}
                script src="/console/billing.js" {}
            }
        },
    );
    let status = if has_errors(errors) { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let mut response = page(status, body);
    if let Some(js) = &js_url {
        // Stripe.js runs, talks to and frames only its own origin; everything else stays 'self'.
        let origin = stripe_origin(js);
        let policy = format!("default-src 'self'; script-src 'self' {origin}; connect-src 'self' {origin}; frame-src {origin}; frame-ancestors 'none'; form-action 'self'; base-uri 'none'");
        if let Ok(v) = HeaderValue::from_str(&policy) {
            response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    response
}

/// The card and invoice forms have no fields to mark (the card's are Stripe.js's): whatever went
/// wrong is said above the form.
fn said_above(e: DomainError) -> FormErrors {
    let errors = FormErrors::from_domain(vec![e]);
    match errors.0.values().next() {
        Some(message) => FormErrors::general(message.clone()),
        None => errors,
    }
}

fn has_errors(errors: &PageErrors) -> bool {
    !(errors.card.is_empty() && errors.contact.is_empty() && errors.invoices.is_empty())
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<Notice>) -> Response {
    let signed = match ctx.customer() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    render(&app, &ctx, signed, notice_text(&q.notice), &PageErrors::default()).await
}

#[derive(Deserialize)]
struct CardPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    setup_intent: String,
}

/// The card form, after Stripe.js confirmed the SetupIntent: matrixhost only learns which
/// payment method it made, checks it is this customer's, and makes it the default.
async fn save_card(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(form): Form<CardPost>) -> Response {
    let signed = match ctx.customer_form(&form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match attach_card(&app, signed, &form.setup_intent).await {
        Ok(()) => see_other("/console/billing?notice=card-saved#card"),
        Err(e) => render(&app, &ctx, signed, None, &PageErrors { card: said_above(e), ..Default::default() }).await,
    }
}

async fn attach_card(app: &App, signed: &SignedIn, setup_intent: &str) -> Result<(), DomainError> {
    let p = &app.platform;
    let Some(stripe) = &p.stripe else { return Err(DomainError::field("card", "this installation takes no payments")) };
    let mut tx = p.db.begin().await?;
    billing_profiles::set_card_from_setup_intent(&mut tx, stripe, &signed.account.org_id, setup_intent, p.clock.now()).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Deserialize)]
struct ContactPost {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    contact_name: String,
    #[serde(default)]
    contact_email: String,
}

async fn save_contact(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(form): Form<ContactPost>) -> Response {
    let signed = match ctx.customer_form(&form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    let saved = async {
        let contact = Contact::parse(&form.contact_name, &form.contact_email)?;
        let mut tx = p.db.begin().await?;
        // R13: who changed it is the signed-in person, by their login address.
        let changed = billing_profiles::set_contact(&mut tx, p.stripe.as_ref(), &signed.account.org_id, &signed.account.email, &contact, p.clock.now()).await?;
        tx.commit().await?;
        Ok::<_, DomainError>(changed)
    }
    .await;
    match saved {
        Ok(0) => see_other("/console/billing?notice=contact-unchanged#contact"),
        Ok(_) => see_other("/console/billing?notice=contact-saved#contact"),
        Err(e) => render(&app, &ctx, signed, None, &PageErrors { contact: FormErrors::from_domain(vec![e]), ..Default::default() }).await,
    }
}

/// R12: pays an open invoice now with the card on file; a paid invoice lifts the block.
async fn pay_invoice(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(invoice_id): Path<String>, Form(form): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match pay(&app, &signed.account.org_id, &invoice_id).await {
        Ok(()) => see_other("/console/billing?notice=invoice-paid#invoices"),
        Err(e) => render(&app, &ctx, signed, None, &PageErrors { invoices: said_above(e), ..Default::default() }).await,
    }
}

async fn pay(app: &App, org_id: &str, invoice_id: &str) -> Result<(), DomainError> {
    let p = &app.platform;
    let Some(stripe) = &p.stripe else { return Err(DomainError::NotFound("invoice")) };
    let mut tx = p.db.begin().await?;
    let paid = billing_plans::pay_open_invoice(&mut tx, stripe, org_id, invoice_id, p.clock.now()).await;
    // A refused card is still news about the invoice: keep what Stripe said of it.
    tx.commit().await?;
    paid?;
    p.changed();
    Ok(())
}

/// R13: a fresh link to the invoice (the page's button posts here, so no link sits in a page).
async fn invoice_link(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(invoice_id): Path<String>, Form(form): Form<CsrfOnly>) -> Response {
    let signed = match ctx.customer_form(&form.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = &app.platform;
    let issued = async {
        let mut tx = p.db.begin().await?;
        let token = invoices::issue_link(&mut tx, &signed.account.org_id, &invoice_id, p.clock.now()).await?;
        tx.commit().await?;
        Ok::<_, DomainError>(token)
    }
    .await;
    match issued {
        Ok(Some(token)) => see_other(&format!("/invoices/{token}")),
        Ok(None) => page(StatusCode::NOT_FOUND, layout("Invoice not found", &ctx.viewer(), html! { p { "No invoice of yours has that id." } })),
        Err(e) => {
            tracing::error!(error = %e, "invoice link");
            page(StatusCode::INTERNAL_SERVER_ERROR, layout("Invoice", &ctx.viewer(), html! { p { "The link could not be made; try again." } }))
        }
    }
}

/// An invoice by its link: no log-in needed (it can go to whoever pays), never indexed, never
/// cached, and the same "not found" for a link that never was and one that expired.
async fn show_invoice(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Path(token): Path<String>) -> Response {
    let p = &app.platform;
    let found = async {
        let mut tx = p.db.begin().await?;
        invoices::by_link(&mut tx, &token, p.clock.now()).await
    }
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "invoice by link");
        None
    });
    let mut response = match found {
        None => page(StatusCode::NOT_FOUND, layout("Invoice not found", &ctx.viewer(), html! { p { "This invoice link is unknown or has expired. Make a new one on the billing page." } })),
        Some((_, record)) => {
            let lines = match &p.stripe {
                Some(stripe) => stripe.invoice(&record.id).await.map(|i| i.lines.data).unwrap_or_default(),
                None => vec![],
            };
            page(StatusCode::OK, invoice_page(&ctx, &record, &lines))
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex, nofollow, noarchive"));
    response
}

fn invoice_page(ctx: &Ctx, record: &invoices::InvoiceRecord, lines: &[crate::stripe_api::InvoiceLine]) -> Markup {
    layout(
        "Invoice",
        &ctx.viewer(),
        html! {
            dl {
                dt { "Invoice" } dd { (record.id) }
                dt { "Date" } dd { (record.created_at.format("%Y-%m-%d")) }
                dt { "Status" } dd { (record.status) }
            }
            table {
                caption class="visually-hidden" { "Invoice lines" }
                thead { tr { th scope="col" { "Description" } th scope="col" { "Period" } th scope="col" { "Amount" } } }
                tbody {
                    @for l in lines {
                        tr {
                            td { (l.description.as_deref().unwrap_or("")) @if let Some(q) = l.quantity { @if q > 1 { " × " (q) } } }
                            td { @if let Some(period) = &l.period { (day(period.start)) " to " (day(period.end)) } }
                            td { (money(l.amount)) }
                        }
                    }
                }
                tfoot {
                    tr { th scope="row" colspan="2" { "Total" } td { (money(record.total_cents)) } }
                    tr { th scope="row" colspan="2" { "Paid" } td { (money(record.amount_paid_cents)) } }
                    tr { th scope="row" colspan="2" { "Due" } td { (money(record.amount_due_cents - record.amount_paid_cents)) } }
                }
            }
            p { "Amounts in US dollars (" (record.currency.to_uppercase()) ")." }
        },
    )
}

/// The card form's script: Stripe.js confirms the SetupIntent with the card element, then the
/// form posts only the SetupIntent's id.
async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], BILLING_JS).into_response()
}

const BILLING_JS: &str = include_str!("billing.js");

#[cfg(test)]
mod tests {
    use super::{money, stripe_origin};

    #[test]
    fn the_policy_lets_in_only_stripes_origin() {
        assert_eq!(stripe_origin("https://js.stripe.com/v3/"), "https://js.stripe.com");
        assert_eq!(stripe_origin("http://127.0.0.1:8788/js.stripe.com/v3/"), "http://127.0.0.1:8788");
    }

    #[test]
    fn amounts_read_as_dollars_and_cents() {
        assert_eq!(money(5000), "$50.00");
        assert_eq!(money(-1290), "−$12.90");
        assert_eq!(money(7), "$0.07");
    }
}
