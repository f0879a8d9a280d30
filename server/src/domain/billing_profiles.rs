//! An organization's billing profile (R13): its Stripe customer, the card payments are taken
//! from (brand and last four digits only; the number never reaches matrixhost) and the billing
//! contact, whose every change is logged. Table `billing_profiles`, log
//! `billing_contact_changes`.

use chrono::{DateTime, Utc};
use matrixhost_api::{billing_page_url, Email, ErrorCode, PaymentCard, PaymentMethodId};
use sqlx::any::AnyRow;

use super::{DomainError, DomainResult};
use crate::db::{ts, RowExt, Tx};
use crate::stripe_api::StripeApi;

#[derive(Debug, Clone, Default)]
pub struct BillingProfile {
    pub stripe_customer_id: Option<String>,
    pub payment_method_id: Option<String>,
    pub card: Option<PaymentCard>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
}

/// The card on file in a row that has the profile's `card_brand` and `card_last4` columns.
pub fn card_of_row(r: &AnyRow) -> anyhow::Result<Option<PaymentCard>> {
    Ok(match (r.opt_text("card_brand")?, r.opt_text("card_last4")?) {
        (Some(brand), Some(last4)) => Some(PaymentCard { brand, last4 }),
        _ => None,
    })
}

impl BillingProfile {
    fn from_row(r: &AnyRow) -> anyhow::Result<Self> {
        Ok(Self {
            stripe_customer_id: r.opt_text("stripe_customer_id")?,
            payment_method_id: r.opt_text("payment_method_id")?,
            card: card_of_row(r)?,
            contact_name: r.opt_text("contact_name")?,
            contact_email: r.opt_text("contact_email")?,
        })
    }
}

/// One logged change of the billing contact (R13).
#[derive(Debug, Clone)]
pub struct ContactChange {
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

pub async fn get(tx: &mut Tx<'_>, org_id: &str) -> DomainResult<BillingProfile> {
    let row = sqlx::query("SELECT * FROM billing_profiles WHERE org_id = $1").bind(org_id).fetch_optional(&mut **tx).await?;
    Ok(match row {
        Some(r) => BillingProfile::from_row(&r)?,
        None => BillingProfile::default(),
    })
}

async fn ensure_row(tx: &mut Tx<'_>, org_id: &str, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("INSERT INTO billing_profiles (org_id, updated_at) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(org_id).bind(ts(now)).execute(&mut **tx).await?;
    Ok(())
}

/// The organization's Stripe customer, made on first need. Its email is the billing contact's,
/// or the organization's.
pub async fn ensure_customer(tx: &mut Tx<'_>, stripe: &StripeApi, org_id: &str, now: DateTime<Utc>) -> DomainResult<String> {
    let profile = get(tx, org_id).await?;
    if let Some(id) = profile.stripe_customer_id {
        return Ok(id);
    }
    let org_email: String = sqlx::query_scalar("SELECT email FROM organizations WHERE id = $1").bind(org_id).fetch_one(&mut **tx).await?;
    let email = profile.contact_email.unwrap_or(org_email);
    let customer = stripe.create_customer(org_id, &email).await.map_err(|e| DomainError::from_stripe("payment_method_id", e))?;
    ensure_row(tx, org_id, now).await?;
    sqlx::query("UPDATE billing_profiles SET stripe_customer_id = $1, updated_at = $2 WHERE org_id = $3").bind(&customer.id).bind(ts(now)).bind(org_id).execute(&mut **tx).await?;
    tracing::info!(org_id, "made the organization's payment processor customer");
    Ok(customer.id)
}

/// [`ensure_customer`] in a transaction of its own, committed before the request's: a customer
/// made at the processor is never forgotten because the request that needed it failed.
pub async fn ensure_customer_committed(db: &crate::db::Db, stripe: &StripeApi, org_id: &str, now: DateTime<Utc>) -> DomainResult<String> {
    let mut tx = db.begin().await?;
    let id = ensure_customer(&mut tx, stripe, org_id, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// Makes `payment_method` the card every payment of the organization is taken from: attached to
/// its Stripe customer (a card the issuer refuses fails here, with its message) and set as the
/// customer's default. Keeps the brand and last four digits (R13).
pub async fn set_card(tx: &mut Tx<'_>, stripe: &StripeApi, org_id: &str, payment_method: &PaymentMethodId, now: DateTime<Utc>) -> DomainResult<PaymentCard> {
    let customer = ensure_customer(tx, stripe, org_id, now).await?;
    let unknown = || DomainError::Missing { field: "payment_method_id".into(), message: format!("payment_method_id: the payment processor has no payment method {payment_method}") };
    let found = stripe.payment_method(payment_method.as_str()).await.map_err(|e| if e.status == 404 { unknown() } else { DomainError::from_stripe("payment_method_id", e) })?;
    if found.customer.as_deref().is_some_and(|c| c != customer) {
        // Another customer's card: answer as if it did not exist.
        return Err(unknown());
    }
    if found.customer.is_none() {
        stripe.attach_payment_method(payment_method.as_str(), &customer).await.map_err(|e| DomainError::from_stripe("payment_method_id", e))?;
    }
    stripe.set_default_payment_method(&customer, payment_method.as_str()).await.map_err(|e| DomainError::from_stripe("payment_method_id", e))?;
    let card = found.card.map(|c| PaymentCard { brand: c.brand, last4: c.last4 }).ok_or_else(|| DomainError::field("payment_method_id", "the payment method is not a card"))?;
    sqlx::query("UPDATE billing_profiles SET payment_method_id = $1, card_brand = $2, card_last4 = $3, updated_at = $4 WHERE org_id = $5")
        .bind(payment_method.as_str())
        .bind(&card.brand)
        .bind(&card.last4)
        .bind(ts(now))
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    tracing::info!(org_id, brand = %card.brand, last4 = %card.last4, "card on file changed");
    Ok(card)
}

/// R13: the card the console's Stripe.js form saved. matrixhost learns only which SetupIntent
/// the browser confirmed; it must be this organization's customer's and have succeeded, and its
/// payment method becomes the card on file. Anything else reads as an expired form.
pub async fn set_card_from_setup_intent(tx: &mut Tx<'_>, stripe: &StripeApi, org_id: &str, setup_intent: &str, now: DateTime<Utc>) -> DomainResult<PaymentCard> {
    let expired = || DomainError::field("card", "the card form expired; reload the page and enter the card again");
    if !setup_intent.starts_with("seti_") || setup_intent.len() > 100 {
        return Err(expired());
    }
    let intent = stripe.setup_intent(setup_intent).await.map_err(|e| if e.status == 404 { expired() } else { DomainError::from_stripe("card", e) })?;
    // The card form made this organization's customer before its intent: no customer, not ours.
    let customer = get(tx, org_id).await?.stripe_customer_id;
    if customer.is_none() || intent.customer != customer {
        return Err(expired());
    }
    let (Some(pm), "succeeded") = (intent.payment_method.as_deref(), intent.status.as_str()) else {
        return Err(DomainError::field("card", "the card was not confirmed; enter it again"));
    };
    let pm = PaymentMethodId::parse(pm).map_err(|e| DomainError::rule("card", e))?;
    set_card(tx, stripe, org_id, &pm, now).await
}

/// R11: payments are taken in advance, so a subscription needs a card on file.
pub fn require_card(profile: &BillingProfile, console_url: &str) -> DomainResult<()> {
    if profile.payment_method_id.is_some() {
        return Ok(());
    }
    Err(DomainError::Payment {
        code: ErrorCode::PaymentRequired,
        field: "payment_method_id".into(),
        message: format!("payment_method_id: R11: billing plans are paid in advance and this organization has no card on file; add one on the console's billing page ({}) or set payment_method_id", billing_page_url(console_url)),
    })
}

/// The billing contact, as the console's form sends it: a name and an address (either empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<Email>,
}

impl Contact {
    pub fn parse(name: &str, email: &str) -> DomainResult<Contact> {
        let name = name.trim();
        if name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(DomainError::field("contact_name", "at most 200 characters, no control characters"));
        }
        let email = email.trim();
        let email = if email.is_empty() { None } else { Some(Email::parse(email).map_err(|e| DomainError::rule("contact_email", e))?) };
        Ok(Contact { name: (!name.is_empty()).then(|| name.to_owned()), email })
    }
}

/// R13: changes the billing contact and logs each changed field with who changed it, when, the
/// old value and the new. The Stripe customer's email follows the contact's address.
pub async fn set_contact(tx: &mut Tx<'_>, stripe: Option<&StripeApi>, org_id: &str, changed_by: &str, contact: &Contact, now: DateTime<Utc>) -> DomainResult<usize> {
    ensure_row(tx, org_id, now).await?;
    let before = get(tx, org_id).await?;
    let new_email = contact.email.as_ref().map(|e| e.as_str().to_owned());
    let changes: Vec<(&str, Option<String>, Option<String>)> = [("name", before.contact_name.clone(), contact.name.clone()), ("email", before.contact_email.clone(), new_email.clone())]
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .collect();
    if changes.is_empty() {
        return Ok(0);
    }
    sqlx::query("UPDATE billing_profiles SET contact_name = $1, contact_email = $2, updated_at = $3 WHERE org_id = $4")
        .bind(&contact.name)
        .bind(&new_email)
        .bind(ts(now))
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    for (field, old, new) in &changes {
        sqlx::query("INSERT INTO billing_contact_changes (id, org_id, changed_by, changed_at, field, old_value, new_value) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(crate::ids::new_id("bcc"))
            .bind(org_id)
            .bind(changed_by)
            .bind(ts(now))
            .bind(field)
            .bind(old)
            .bind(new)
            .execute(&mut **tx)
            .await?;
    }
    if let (Some(stripe), Some(customer), Some(email)) = (stripe, &before.stripe_customer_id, &new_email) {
        stripe.update_customer_email(customer, email).await.map_err(|e| DomainError::from_stripe("contact_email", e))?;
    }
    tracing::info!(org_id, fields = changes.len(), "billing contact changed");
    Ok(changes.len())
}

/// The log of billing-contact changes, newest first.
pub async fn contact_changes(tx: &mut Tx<'_>, org_id: &str) -> DomainResult<Vec<ContactChange>> {
    let rows = sqlx::query("SELECT changed_by, changed_at, field, old_value, new_value FROM billing_contact_changes WHERE org_id = $1 ORDER BY changed_at DESC, id DESC LIMIT 100")
        .bind(org_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ContactChange {
                changed_by: r.text("changed_by")?,
                changed_at: r.time("changed_at")?,
                field: r.text("field")?,
                old_value: r.opt_text("old_value")?,
                new_value: r.opt_text("new_value")?,
            })
        })
        .collect()
}

/// The organization whose Stripe customer this is.
pub async fn org_of_customer(tx: &mut Tx<'_>, customer: &str) -> DomainResult<Option<String>> {
    Ok(sqlx::query_scalar("SELECT org_id FROM billing_profiles WHERE stripe_customer_id = $1").bind(customer).fetch_optional(&mut **tx).await?)
}
