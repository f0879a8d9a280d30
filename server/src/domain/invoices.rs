//! Invoices as Stripe reports them (R11, R13): state and amounts, kept from the answers to
//! matrixhost's own calls and from Stripe's webhook events. Table `invoices`; the links that show
//! one are in `invoice_links`: 256 random bits, only the hash kept, expiring (R13).

use chrono::{DateTime, Duration, Utc};
use sqlx::any::AnyRow;

use super::orgs::{generate_secret, hash_token};
use super::{billing_profiles, DomainResult};
use crate::db::{ts, Db, RowExt, Tx};

/// How long an invoice link works.
pub const LINK_LIFETIME: Duration = Duration::days(7);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRecord {
    pub id: String,
    pub status: String,
    pub total_cents: i64,
    pub amount_due_cents: i64,
    pub amount_paid_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// What is known of an invoice at one moment.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub subscription: Option<&'a str>,
    pub status: &'a str,
    pub total: i64,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: &'a str,
    pub created: i64,
}

impl<'a> Observed<'a> {
    /// The invoice a webhook event is about, when the event carries what a record needs.
    pub fn from_event(object: &'a crate::stripe::EventObject) -> Option<Self> {
        Some(Observed {
            id: object.id.as_deref()?,
            customer: object.customer.as_deref()?,
            subscription: object.subscription.as_deref(),
            status: object.status.as_deref()?,
            total: object.total?,
            amount_due: object.amount_due?,
            amount_paid: object.amount_paid?,
            currency: object.currency.as_deref()?,
            created: object.created.or(object.date)?,
        })
    }
}

impl<'a> From<&'a crate::stripe_api::Invoice> for Observed<'a> {
    fn from(i: &'a crate::stripe_api::Invoice) -> Self {
        Observed {
            id: i.id.as_deref().unwrap_or_default(),
            customer: &i.customer,
            subscription: i.subscription.as_deref(),
            status: &i.status,
            total: i.total,
            amount_due: i.amount_due,
            amount_paid: i.amount_paid,
            currency: &i.currency,
            created: i.created_unix(),
        }
    }
}

impl InvoiceRecord {
    fn from_row(r: &AnyRow) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.text("id")?,
            status: r.text("status")?,
            total_cents: r.int("total_cents")?,
            amount_due_cents: r.int("amount_due_cents")?,
            amount_paid_cents: r.int("amount_paid_cents")?,
            currency: r.text("currency")?,
            created_at: r.time("created_at")?,
        })
    }
}

/// An invoice's life at Stripe only goes forward: draft, open, then uncollectible, then paid or
/// void. Stripe's events may arrive in any order, so what is kept of an invoice never goes back
/// to an earlier stage (a late `invoice.created` would otherwise turn a paid invoice into a draft).
const STAGES: [(&str, i64); 5] = [("draft", 0), ("open", 1), ("uncollectible", 2), ("paid", 3), ("void", 3)];

fn stage(status: &str) -> i64 {
    STAGES.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
}

/// [`stage`] of the kept invoice, in SQL.
fn kept_stage_sql() -> String {
    let cases: String = STAGES.iter().map(|(s, n)| format!(" WHEN '{s}' THEN {n}")).collect();
    format!("CASE invoices.status{cases} ELSE 0 END")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Kept,
    /// Older than what is kept: Stripe's news arrived out of order.
    Stale,
    /// Not an invoice of any of our customers.
    NotOurs,
}

/// Keeps what Stripe says of an invoice of one of our customers; another customer's is ignored.
pub async fn record(tx: &mut Tx<'_>, invoice: &Observed<'_>, now: DateTime<Utc>) -> DomainResult<Recorded> {
    if invoice.id.is_empty() {
        return Ok(Recorded::NotOurs);
    }
    let Some(org_id) = billing_profiles::org_of_customer(tx, invoice.customer).await? else { return Ok(Recorded::NotOurs) };
    let created = DateTime::from_timestamp(invoice.created, 0).unwrap_or(now);
    let written = sqlx::query(&format!(
        "INSERT INTO invoices (id, org_id, stripe_subscription_id, status, total_cents, amount_due_cents, amount_paid_cents, currency, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, total_cents = excluded.total_cents, amount_due_cents = excluded.amount_due_cents, \
         amount_paid_cents = excluded.amount_paid_cents, updated_at = excluded.updated_at \
         WHERE {} <= $11",
        kept_stage_sql()
    ))
    .bind(invoice.id)
    .bind(&org_id)
    .bind(invoice.subscription)
    .bind(invoice.status)
    .bind(invoice.total)
    .bind(invoice.amount_due)
    .bind(invoice.amount_paid)
    .bind(invoice.currency)
    .bind(ts(created))
    .bind(ts(now))
    .bind(stage(invoice.status))
    .execute(&mut **tx)
    .await?;
    Ok(if written.rows_affected() == 0 { Recorded::Stale } else { Recorded::Kept })
}

/// The organization's invoices, newest first.
pub async fn list(tx: &mut Tx<'_>, org_id: &str, limit: i64) -> DomainResult<Vec<InvoiceRecord>> {
    let rows = sqlx::query("SELECT * FROM invoices WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2").bind(org_id).bind(limit).fetch_all(&mut **tx).await?;
    rows.iter().map(|r| Ok(InvoiceRecord::from_row(r)?)).collect()
}

pub async fn get(tx: &mut Tx<'_>, org_id: &str, id: &str) -> DomainResult<Option<InvoiceRecord>> {
    let row = sqlx::query("SELECT * FROM invoices WHERE id = $1 AND org_id = $2").bind(id).bind(org_id).fetch_optional(&mut **tx).await?;
    Ok(row.map(|r| InvoiceRecord::from_row(&r)).transpose()?)
}

/// R13: a link to one invoice of the organization, valid for [`LINK_LIFETIME`]. Returns the token,
/// which is only ever in the link.
pub async fn issue_link(tx: &mut Tx<'_>, org_id: &str, invoice_id: &str, now: DateTime<Utc>) -> DomainResult<Option<String>> {
    if get(tx, org_id, invoice_id).await?.is_none() {
        return Ok(None);
    }
    let token = generate_secret();
    sqlx::query("INSERT INTO invoice_links (token_hash, invoice_id, org_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash_token(&token))
        .bind(invoice_id)
        .bind(org_id)
        .bind(ts(now))
        .bind(ts(now + LINK_LIFETIME))
        .execute(&mut **tx)
        .await?;
    Ok(Some(token))
}

/// The invoice a link shows and its organization: `None` for an unknown, forged or expired link
/// (one answer for all).
pub async fn by_link(tx: &mut Tx<'_>, token: &str, now: DateTime<Utc>) -> DomainResult<Option<(String, InvoiceRecord)>> {
    let row = sqlx::query("SELECT org_id, invoice_id FROM invoice_links WHERE token_hash = $1 AND expires_at > $2").bind(hash_token(token)).bind(ts(now)).fetch_optional(&mut **tx).await?;
    let Some(row) = row else { return Ok(None) };
    let org_id = row.text("org_id")?;
    Ok(get(tx, &org_id, &row.text("invoice_id")?).await?.map(|i| (org_id, i)))
}

/// Housekeeping: expired links are of no use to anyone.
pub async fn prune_links(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    Ok(sqlx::query("DELETE FROM invoice_links WHERE expires_at <= $1").bind(ts(now)).execute(db).await?.rows_affected())
}
