//! Billing plans: subscriptions (R5, R8, R10, R11, R15). Table `billing_plans`.

use chrono::{DateTime, Months, Utc};
use matrixhost_api::{
    billing_page_url, ErrorCode, check_reserved_within_cap, AdditionalUsers, BillingPeriod, BillingPlan, BillingPlanCreate, BillingPlanUpdate,
    BillingStatus, Catalog, HomeserverStatus, PaymentCard, PaymentMethodId, Plan, PlanChange, PlanTier,
};
use sqlx::any::AnyRow;

use super::apply::{applied_at_write, apply_status, HostOf};
use super::charges::{self, Billing, Settlement};
use super::{billing_profiles, check_version, homeservers, invoices, DomainError, DomainResult, PageRequest, WriteContext};
use crate::db::{lock_row, ts, Db, RowExt, Tx};
use crate::stripe_api::StripeApi;

/// The payment processor, when one is configured (without one, plans are recorded and not
/// charged: development and the tests of other parts).
#[derive(Clone, Copy)]
pub struct Payments<'a> {
    pub stripe: &'a StripeApi,
    /// Where customers add a card (named in errors).
    pub console_url: &'a str,
}

/// Who is billed, through what, and when: what every call to the processor for one request
/// shares.
#[derive(Clone, Copy)]
struct Billed<'a> {
    payments: Payments<'a>,
    org_id: &'a str,
    /// The organization's Stripe customer.
    customer: &'a str,
    now: DateTime<Utc>,
}

/// The Stripe subscription a billing plan is, and what its next renewal bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeLink {
    pub subscription_id: String,
    pub plan_id: String,
    pub quantity: u32,
}

/// A subscription as stored, before the clock is applied.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub plan: PlanTier,
    pub active_plan: PlanTier,
    pub pending_plan: Option<PlanTier>,
    pub billing_period: BillingPeriod,
    pub additional_users: AdditionalUsers,
    pub payment_method_id: Option<PaymentMethodId>,
    pub status: BillingStatus,
    anniversary_anchor: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    pub version: i64,
    /// The version the homeserver paid for runs with (see `domain::apply`).
    applied_version: Option<i64>,
    /// That homeserver's status and reason, when one is on this plan.
    host: Option<(HomeserverStatus, Option<String>)>,
    pub stripe: Option<StripeLink>,
    /// The organization's card on file (R13: brand and last four digits).
    card: Option<PaymentCard>,
}

fn period_months(period: BillingPeriod) -> u32 {
    match period {
        BillingPeriod::Monthly => 1,
        BillingPeriod::Annual => 12,
    }
}

/// The first anniversary of `anchor` (a whole number of periods after it) later than `after`.
/// Counting from the anchor keeps the day of month: a subscription from Jan 31 renews on the
/// last day of each shorter month and on the 31st again after it.
pub fn next_anniversary(anchor: DateTime<Utc>, after: DateTime<Utc>, period: BillingPeriod) -> DateTime<Utc> {
    let step = period_months(period);
    let mut n = step;
    loop {
        let candidate = anchor.checked_add_months(Months::new(n)).unwrap_or(DateTime::<Utc>::MAX_UTC);
        if candidate > after {
            return candidate;
        }
        n += step;
    }
}

impl Subscription {
    fn from_row(r: &AnyRow) -> anyhow::Result<Self> {
        Ok(Self {
            id: r.text("id")?,
            plan: r.parsed("plan")?,
            active_plan: r.parsed("active_plan")?,
            pending_plan: r.opt_parsed("pending_plan")?,
            billing_period: BillingPeriod::parse(&r.text("billing_period")?).map_err(anyhow::Error::msg)?,
            additional_users: AdditionalUsers::parse(r.int("additional_users")?).map_err(anyhow::Error::msg)?,
            payment_method_id: r.opt_parsed("payment_method_id")?,
            status: match r.text("status")?.as_str() {
                "past_due" => BillingStatus::PastDue,
                _ => BillingStatus::Active,
            },
            anniversary_anchor: r.time("anniversary_anchor")?,
            current_period_start: r.time("current_period_start")?,
            current_period_end: r.time("current_period_end")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
            version: r.int("version")?,
            applied_version: r.opt_int("applied_version")?,
            host: match r.opt_text("hs_status")? {
                Some(status) => Some((HomeserverStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("bad homeserver status"))?, r.opt_text("hs_status_reason")?)),
                None => None,
            },
            stripe: match (r.opt_text("stripe_subscription_id")?, r.opt_text("stripe_plan_id")?, r.opt_int("stripe_quantity")?) {
                (Some(subscription_id), Some(plan_id), Some(quantity)) => Some(StripeLink { subscription_id, plan_id, quantity: u32::try_from(quantity)? }),
                _ => None,
            },
            card: billing_profiles::card_of_row(r)?,
        })
    }

    // R11: at each anniversary a new period starts and a pending downgrade takes effect.
    fn settle(&mut self, now: DateTime<Utc>) {
        if now < self.current_period_end {
            return;
        }
        self.current_period_start = self.current_period_end;
        while self.current_period_start <= now {
            let end = next_anniversary(self.anniversary_anchor, self.current_period_start, self.billing_period);
            if end > now {
                self.current_period_end = end;
                break;
            }
            self.current_period_start = end;
        }
        if let Some(pending) = self.pending_plan.take() {
            self.active_plan = pending;
        }
    }

    /// The plan in force now.
    pub fn active<'c>(&self, catalog: &'c Catalog) -> DomainResult<&'c Plan> {
        catalog.plan(&self.active_plan).map_err(|e| DomainError::internal(format!("subscription {}: {e}", self.id)))
    }

    /// The plans this subscription is or will be on: rules that depend on the plan must hold
    /// for both, or a scheduled downgrade would break them at the anniversary.
    pub fn binding_plans<'c>(&self, catalog: &'c Catalog) -> DomainResult<Vec<&'c Plan>> {
        let mut plans = vec![self.active(catalog)?];
        if let Some(pending) = &self.pending_plan {
            plans.push(catalog.plan(pending).map_err(|e| DomainError::internal(format!("subscription {}: {e}", self.id)))?);
        }
        Ok(plans)
    }

    /// R8/R10: the smallest MAU cap among the binding plans, with the plan it comes from.
    pub fn binding_cap<'c>(&self, catalog: &'c Catalog) -> DomainResult<(u32, &'c Plan)> {
        let plans = self.binding_plans(catalog)?;
        let plan = plans.into_iter().min_by_key(|p| p.mau_cap(self.additional_users)).expect("at least the active plan");
        Ok((plan.mau_cap(self.additional_users), plan))
    }

    /// R5/R10: the MAU cap in force now. The one place it is computed for a subscription.
    pub fn mau_cap(&self, catalog: &Catalog) -> DomainResult<u32> {
        Ok(self.active(catalog)?.mau_cap(self.additional_users))
    }

    pub fn to_api(&self, catalog: &Catalog) -> DomainResult<BillingPlan> {
        let host = self.host.as_ref().map(|(status, reason)| HostOf { status: *status, status_reason: reason.as_deref() });
        let (apply_status, apply_error) = apply_status(self.version, self.applied_version, None, host);
        Ok(BillingPlan {
            id: self.id.clone(),
            plan: self.plan.clone(),
            active_plan: self.active_plan.clone(),
            pending_plan: self.pending_plan.clone(),
            pending_change_at: self.pending_plan.as_ref().map(|_| self.current_period_end),
            billing_period: self.billing_period,
            additional_users: self.additional_users,
            payment_method_id: self.payment_method_id.clone(),
            card: self.card.clone(),
            status: self.status,
            mau_cap: self.mau_cap(catalog)?,
            current_period_start: self.current_period_start,
            current_period_end: self.current_period_end,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            apply_status,
            apply_error,
        })
    }
}

macro_rules! columns {
    () => {
        "id, plan, active_plan, pending_plan, billing_period, additional_users, payment_method_id, status, \
         anniversary_anchor, current_period_start, current_period_end, created_at, updated_at, version, \
         stripe_subscription_id, stripe_plan_id, stripe_quantity"
    };
}
const COLUMNS: &str = columns!();
/// What a read adds: how far the homeserver on the plan has got with it.
const READ_COLUMNS: &str = concat!(
    columns!(),
    ", applied_version, \
     (SELECT h.status FROM homeservers h WHERE h.billing_plan_id = billing_plans.id) AS hs_status, \
     (SELECT h.status_reason FROM homeservers h WHERE h.billing_plan_id = billing_plans.id) AS hs_status_reason, \
     (SELECT p.card_brand FROM billing_profiles p WHERE p.org_id = billing_plans.org_id) AS card_brand, \
     (SELECT p.card_last4 FROM billing_profiles p WHERE p.org_id = billing_plans.org_id) AS card_last4"
);

/// Loads a subscription of the organization, settled to `now`.
pub async fn load(tx: &mut Tx<'_>, org_id: &str, id: &str, now: DateTime<Utc>) -> DomainResult<Option<Subscription>> {
    let row = sqlx::query(&format!("SELECT {READ_COLUMNS} FROM billing_plans WHERE id = $1 AND org_id = $2")).bind(id).bind(org_id).fetch_optional(&mut **tx).await?;
    let Some(row) = row else { return Ok(None) };
    let mut sub = Subscription::from_row(&row)?;
    sub.settle(now);
    Ok(Some(sub))
}

pub async fn load_or_404(tx: &mut Tx<'_>, org_id: &str, id: &str, now: DateTime<Utc>) -> DomainResult<Subscription> {
    load(tx, org_id, id, now).await?.ok_or(DomainError::NotFound("billing plan"))
}

pub async fn list(db: &Db, org_id: &str, page: PageRequest<'_>, now: DateTime<Utc>, catalog: &Catalog) -> DomainResult<Vec<BillingPlan>> {
    let rows = sqlx::query(&format!("SELECT {READ_COLUMNS} FROM billing_plans WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
        .bind(org_id)
        .bind(page.after)
        .bind(page.fetch)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            let mut sub = Subscription::from_row(r)?;
            sub.settle(now);
            sub.to_api(catalog)
        })
        .collect()
}

/// R15: only a verified organization subscribes. Payment is in advance for the period that
/// starts now (R11): with a payment processor, the Stripe subscription is made and its first
/// period charged before the plan exists; a refused card leaves nothing behind.
pub async fn create(tx: &mut Tx<'_>, org_id: &str, email_verified: bool, body: BillingPlanCreate, now: DateTime<Utc>, catalog: &Catalog, payments: Option<Payments<'_>>) -> DomainResult<BillingPlan> {
    if !email_verified {
        return Err(DomainError::Forbidden { code: ErrorCode::EmailNotVerified, message: "R15: the organization's email address must be verified before it can subscribe".into() });
    }
    let plan = catalog.plan(&body.plan).map_err(|e| DomainError::rule("plan", e))?;
    let mut sub = Subscription {
        id: crate::ids::new_id("bp"),
        plan: body.plan.clone(),
        active_plan: body.plan,
        pending_plan: None,
        billing_period: body.billing_period,
        additional_users: body.additional_users,
        payment_method_id: body.payment_method_id,
        status: BillingStatus::Active,
        anniversary_anchor: now,
        current_period_start: now,
        current_period_end: next_anniversary(now, now, body.billing_period),
        created_at: now,
        updated_at: now,
        version: 1,
        applied_version: Some(1),
        host: None,
        stripe: None,
        card: None,
    };
    if let Some(payments) = payments {
        sub.card = prepare_card(tx, payments, org_id, sub.payment_method_id.as_ref(), now).await?;
        let billing = Billing { active: plan, renewal: plan, period: sub.billing_period, additional_users: sub.additional_users.get() };
        let customer = billing_profiles::ensure_customer(tx, payments.stripe, org_id, now).await?;
        let who = Billed { payments, org_id, customer: &customer, now };
        sub.stripe = Some(subscribe(tx, who, &sub.id, &billing, None, "payment_method_id").await?);
    }
    let stripe = sub.stripe.clone();
    sqlx::query(&format!("INSERT INTO billing_plans (org_id, {COLUMNS}, applied_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"))
        .bind(org_id)
        .bind(&sub.id)
        .bind(sub.plan.as_str())
        .bind(sub.active_plan.as_str())
        .bind(None::<String>)
        .bind(sub.billing_period.as_str())
        .bind(i64::from(sub.additional_users.get()))
        .bind(sub.payment_method_id.as_ref().map(|p| p.to_string()))
        .bind(sub.status.as_str())
        .bind(ts(sub.anniversary_anchor))
        .bind(ts(sub.current_period_start))
        .bind(ts(sub.current_period_end))
        .bind(ts(now))
        .bind(ts(now))
        .bind(sub.version)
        .bind(stripe.as_ref().map(|s| s.subscription_id.clone()))
        .bind(stripe.as_ref().map(|s| s.plan_id.clone()))
        .bind(stripe.as_ref().map(|s| i64::from(s.quantity)))
        .bind(sub.applied_version)
        .execute(&mut **tx)
        .await?;
    tracing::info!(billing_plan_id = %sub.id, plan = %sub.plan, "created billing plan");
    sub.to_api(catalog)
}

/// The card the plan is paid with: `payment_method_id` when given (attached to the
/// organization's Stripe customer and made its default), else the card on file (R11: there
/// must be one).
async fn prepare_card(tx: &mut Tx<'_>, payments: Payments<'_>, org_id: &str, given: Option<&PaymentMethodId>, now: DateTime<Utc>) -> DomainResult<Option<PaymentCard>> {
    let profile = billing_profiles::get(tx, org_id).await?;
    match given {
        Some(pm) if profile.payment_method_id.as_deref() != Some(pm.as_str()) => billing_profiles::set_card(tx, payments.stripe, org_id, pm, now).await.map(Some),
        _ => {
            billing_profiles::require_card(&profile, payments.console_url)?;
            Ok(profile.card)
        }
    }
}

/// A Stripe subscription billing `billing`: charged now for a period starting now, or, with
/// `first_charge_at`, first charged then (what a renewal bills after a change that waits for the
/// anniversary). Its first invoice is kept.
async fn subscribe(tx: &mut Tx<'_>, who: Billed<'_>, billing_plan_id: &str, billing: &Billing<'_>, first_charge_at: Option<DateTime<Utc>>, field: &str) -> DomainResult<StripeLink> {
    let Billed { payments, customer, now, .. } = who;
    let stripe = payments.stripe;
    let (plan, quantity) = match first_charge_at {
        Some(_) => (billing.renewal, billing.renewal_quantity()),
        None => (billing.active, billing.active_quantity()),
    };
    let plan_id = charges::stripe_plan_id(plan, billing.period);
    let interval = match billing.period {
        BillingPeriod::Monthly => "month",
        BillingPeriod::Annual => "year",
    };
    let unit = plan.price_per_mau_per_period_cents(billing.period);
    stripe.ensure_plan(&plan_id, &format!("matrixhost {} ({})", plan.name, billing.period.as_str()), unit, interval).await.map_err(|e| DomainError::from_stripe(field, e))?;
    let created = stripe
        .create_subscription(customer, &plan_id, quantity, billing_plan_id, first_charge_at.map(|t| t.timestamp()))
        .await
        .map_err(|e| DomainError::from_stripe(field, e))?;
    // A charge can also fail after the answer (the processor retries it later); in advance means
    // paid now, so a subscription charged now must be active. (One first charged later is
    // `trialing` at Stripe, still `incomplete` at localstripe.)
    if first_charge_at.is_none() && created.status != "active" {
        cancel_quietly(stripe, &created.id).await;
        return Err(DomainError::Payment {
            code: ErrorCode::PaymentFailed,
            field: field.to_owned(),
            message: format!("{field}: the card was refused: the payment in advance did not go through (the processor left the subscription {}). Nothing was changed.", created.status),
        });
    }
    if let Some(invoice_id) = &created.latest_invoice {
        match stripe.invoice(invoice_id).await {
            Ok(invoice) => {
                invoices::record(tx, &(&invoice).into(), now).await?;
            }
            Err(e) => tracing::warn!(error = %e, "could not read a new subscription's first invoice; its webhook will bring it"),
        }
    }
    tracing::info!(billing_plan_id, plan = %plan_id, quantity, "subscribed with the payment processor");
    Ok(StripeLink { subscription_id: created.id, plan_id, quantity })
}

/// R10, R11 with a payment processor: charges or credits the change from `before` to `sub` and
/// leaves the Stripe subscription billing what the next renewal must. A refused charge changes
/// nothing.
async fn settle_with_processor(tx: &mut Tx<'_>, who: Billed<'_>, before: &Subscription, sub: &mut Subscription, field: &str, catalog: &Catalog) -> DomainResult<()> {
    let Billed { payments, org_id, customer, now } = who;
    let Some(old) = before.stripe.clone() else { return Ok(()) };
    let stripe = payments.stripe;
    if sub.payment_method_id != before.payment_method_id {
        if let Some(pm) = &sub.payment_method_id {
            sub.card = Some(billing_profiles::set_card(tx, stripe, org_id, pm, now).await?);
        }
    }
    let billing_of = |s: &Subscription| -> DomainResult<(&Plan, &Plan)> {
        let active = s.active(catalog)?;
        let renewal = match &s.pending_plan {
            Some(p) => catalog.plan(p).map_err(|e| DomainError::internal(e.message))?,
            None => active,
        };
        Ok((active, renewal))
    };
    let (a0, r0) = billing_of(before)?;
    let (a1, r1) = billing_of(sub)?;
    let was = Billing { active: a0, renewal: r0, period: before.billing_period, additional_users: before.additional_users.get() };
    let will = Billing { active: a1, renewal: r1, period: sub.billing_period, additional_users: sub.additional_users.get() };
    let period = (before.current_period_start, before.current_period_end);
    let mut link = old.clone();
    let mut retired = Vec::new();
    match charges::settle(&was, &will, period, now) {
        Settlement::NewPeriod { credit } => {
            billing_profiles::require_card(&billing_profiles::get(tx, org_id).await?, payments.console_url)?;
            let item = stripe.create_invoice_item(customer, credit.amount_cents, &credit.description).await.map_err(|e| DomainError::from_stripe(field, e))?;
            match subscribe(tx, who, &sub.id, &will, None, field).await {
                Ok(new) => retired.push(std::mem::replace(&mut link, new).subscription_id),
                Err(e) => {
                    // The credit belongs to this change; it must not reach a later invoice.
                    if let Err(cleanup) = stripe.delete_invoice_item(&item.id).await {
                        tracing::info!(error = %cleanup, "the refused change's credit stays on its unpaid invoice");
                    }
                    return Err(e);
                }
            }
            sub.anniversary_anchor = now;
            sub.current_period_start = now;
            sub.current_period_end = next_anniversary(now, now, sub.billing_period);
        }
        Settlement::SamePeriod { credit } => {
            if let Some(credit) = credit {
                stripe.create_invoice_item(customer, credit.amount_cents, &credit.description).await.map_err(|e| DomainError::from_stripe(field, e))?;
            }
        }
    }
    // What the next renewal bills: a pending downgrade, fewer users.
    let renewal_plan = charges::stripe_plan_id(will.renewal, will.period);
    if renewal_plan != link.plan_id || will.renewal_quantity() != link.quantity {
        let new = subscribe(tx, who, &sub.id, &will, Some(sub.current_period_end), field).await?;
        retired.push(std::mem::replace(&mut link, new).subscription_id);
    }
    for replaced in &retired {
        cancel_quietly(stripe, replaced).await;
    }
    sub.stripe = Some(link);
    Ok(())
}

/// R12: while a payment is outstanding only the card may change; a change of tier, users or
/// period waits until the open invoice is paid (it belongs to the subscription in force).
fn refuse_changes_while_unpaid(before: &Subscription, changed: Option<&str>, payments: Payments<'_>) -> DomainResult<()> {
    match changed {
        Some(field) if before.status == BillingStatus::PastDue => Err(DomainError::Payment {
            code: ErrorCode::PaymentRequired,
            field: field.to_owned(),
            message: format!(
                "{field}: R12: a payment for this billing plan failed and is still open; pay it on the console's billing page ({}), or change only payment_method_id, then make this change",
                billing_page_url(payments.console_url)
            ),
        }),
        _ => Ok(()),
    }
}

/// The input a change is about, the first of tier, users and period: what a refusal names.
fn changed_field(before: &Subscription, sub: &Subscription) -> Option<&'static str> {
    [
        ("plan", sub.plan != before.plan),
        ("additional_users", sub.additional_users != before.additional_users),
        ("billing_period", sub.billing_period != before.billing_period),
    ]
    .into_iter()
    .find_map(|(field, differs)| differs.then_some(field))
}

/// Ends a replaced Stripe subscription. Its successor already bills; a failure here is logged
/// for the operator rather than undoing a paid change.
async fn cancel_quietly(stripe: &StripeApi, subscription_id: &str) {
    if let Err(e) = stripe.cancel_subscription(subscription_id).await {
        tracing::error!(error = %e, subscription = subscription_id, "could not cancel a replaced subscription at the payment processor");
    }
}

/// R11: upgrades apply at once; a downgrade waits for the anniversary; asking for the tier in
/// force cancels a pending downgrade.
fn apply_plan_change(sub: &mut Subscription, requested: PlanTier, catalog: &Catalog) -> DomainResult<()> {
    let target = catalog.plan(&requested).map_err(|e| DomainError::rule("plan", e))?;
    match sub.active(catalog)?.change_to(target) {
        PlanChange::Same => sub.pending_plan = None,
        PlanChange::Upgrade => {
            sub.active_plan = requested.clone();
            sub.pending_plan = None;
        }
        PlanChange::Downgrade => sub.pending_plan = Some(requested.clone()),
    }
    sub.plan = requested;
    Ok(())
}

/// The homeserver on this subscription must still fit every plan it is or will be on.
async fn check_homeserver_fits(tx: &mut Tx<'_>, sub: &Subscription, catalog: &Catalog, changed_field: &str) -> DomainResult<()> {
    let Some(hs) = homeservers::on_billing_plan(tx, &sub.id).await? else {
        return Ok(());
    };
    let (cap, cap_plan) = sub.binding_cap(catalog)?;
    // R8
    check_reserved_within_cap(hs.reserved_users, cap).map_err(|e| {
        DomainError::plan_limit(
            changed_field,
            format!("{} (homeserver `{}` has {} reserved users; the {} plan with {} additional users allows {cap})", e.message, hs.name, hs.reserved_users, cap_plan.tier, sub.additional_users),
        )
    })?;
    for plan in sub.binding_plans(catalog)? {
        plan.check_volume_size(hs.volume_size_gb).map_err(|e| DomainError::plan_limit(changed_field, format!("{} (homeserver `{}`)", e.message, hs.name)))?;
        plan.check_encryption_by_default(hs.encryption_by_default).map_err(|e| DomainError::plan_limit(changed_field, format!("{} (homeserver `{}`)", e.message, hs.name)))?;
    }
    Ok(())
}

pub async fn update(
    tx: &mut Tx<'_>,
    org_id: &str,
    id: &str,
    expected_version: Option<i64>,
    body: BillingPlanUpdate,
    ctx: WriteContext<'_>,
    payments: Option<Payments<'_>>,
) -> DomainResult<BillingPlan> {
    let WriteContext { hosted, now, catalog } = ctx;
    lock_row(tx, "billing_plans", id).await?;
    let mut sub = load_or_404(tx, org_id, id, now).await?;
    check_version(expected_version, sub.version, "billing plan")?;
    let stored_version = sub.version;
    let before = sub.clone();
    apply_plan_change(&mut sub, body.plan, catalog)?;
    sub.additional_users = body.additional_users;
    // Takes effect at the next renewal; the current paid period is kept (R11).
    sub.billing_period = body.billing_period;
    sub.payment_method_id = body.payment_method_id;
    let changed = changed_field(&before, &sub);
    let field = changed.unwrap_or("plan");
    check_homeserver_fits(tx, &sub, catalog, field).await?;
    if let Some(payments) = payments {
        refuse_changes_while_unpaid(&before, changed, payments)?;
        let customer = billing_profiles::ensure_customer(tx, payments.stripe, org_id, now).await?;
        settle_with_processor(tx, Billed { payments, org_id, customer: &customer, now }, &before, &mut sub, field, catalog).await?;
    }
    sub.version += 1;
    sub.updated_at = now;
    // Only a hosted homeserver on the plan has to apply the change.
    if let Some(applied) = applied_at_write(hosted && sub.host.is_some(), sub.version) {
        sub.applied_version = Some(applied);
    }
    let done = sqlx::query(
        "UPDATE billing_plans SET plan = $1, active_plan = $2, pending_plan = $3, billing_period = $4, additional_users = $5, \
         payment_method_id = $6, current_period_start = $7, current_period_end = $8, updated_at = $9, version = $10, applied_version = $13, \
         anniversary_anchor = $14, stripe_subscription_id = $15, stripe_plan_id = $16, stripe_quantity = $17 \
         WHERE id = $11 AND version = $12",
    )
    .bind(sub.plan.as_str())
    .bind(sub.active_plan.as_str())
    .bind(sub.pending_plan.as_ref().map(|p| p.to_string()))
    .bind(sub.billing_period.as_str())
    .bind(i64::from(sub.additional_users.get()))
    .bind(sub.payment_method_id.as_ref().map(|p| p.to_string()))
    .bind(ts(sub.current_period_start))
    .bind(ts(sub.current_period_end))
    .bind(ts(now))
    .bind(sub.version)
    .bind(&sub.id)
    .bind(stored_version)
    .bind(sub.applied_version)
    .bind(ts(sub.anniversary_anchor))
    .bind(sub.stripe.as_ref().map(|l| l.subscription_id.clone()))
    .bind(sub.stripe.as_ref().map(|l| l.plan_id.clone()))
    .bind(sub.stripe.as_ref().map(|l| i64::from(l.quantity)))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::version_conflict("billing plan"));
    }
    tracing::info!(billing_plan_id = %sub.id, plan = %sub.plan, active_plan = %sub.active_plan, "updated billing plan");
    sub.to_api(catalog)
}

pub async fn delete(tx: &mut Tx<'_>, org_id: &str, id: &str, expected_version: Option<i64>, now: DateTime<Utc>, payments: Option<Payments<'_>>) -> DomainResult<()> {
    let sub = load_or_404(tx, org_id, id, now).await?;
    check_version(expected_version, sub.version, "billing plan")?;
    if let Some(hs) = homeservers::on_billing_plan(tx, &sub.id).await? {
        return Err(DomainError::conflict(ErrorCode::InUse, format!("billing plan {} is used by homeserver `{}` ({}); delete the homeserver first", sub.id, hs.name, hs.id)));
    }
    // The subscription ends with the plan: no renewal is charged for it.
    if let (Some(payments), Some(link)) = (payments, &sub.stripe) {
        payments.stripe.cancel_subscription(&link.subscription_id).await.map_err(|e| DomainError::from_stripe("id", e))?;
    }
    sqlx::query("DELETE FROM billing_plans WHERE id = $1").bind(&sub.id).execute(&mut **tx).await?;
    tracing::info!(billing_plan_id = %sub.id, "deleted billing plan");
    Ok(())
}

/// The organization's plans billed through Stripe: (billing plan id, end of the paid period,
/// Stripe subscription id).
pub async fn stripe_links(db: &Db, org_id: &str, now: DateTime<Utc>) -> DomainResult<Vec<(String, DateTime<Utc>, String)>> {
    let rows = sqlx::query(&format!("SELECT {READ_COLUMNS} FROM billing_plans WHERE org_id = $1 AND stripe_subscription_id IS NOT NULL ORDER BY id")).bind(org_id).fetch_all(db).await?;
    let mut out = Vec::new();
    for r in &rows {
        let mut sub = Subscription::from_row(r)?;
        sub.settle(now);
        if let Some(link) = sub.stripe {
            out.push((sub.id, sub.current_period_end, link.subscription_id));
        }
    }
    Ok(out)
}

/// What a payment outcome reported for a Stripe subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentRecorded {
    Applied,
    /// Older than the payment outcome already applied to the plan: nothing changed.
    Stale,
    /// No billing plan is that subscription.
    UnknownSubscription,
}

/// R12: records a payment outcome for the billing plan that is `subscription`. `reported_at`:
/// when the processor's event about it was made, so an older event arriving later changes
/// nothing; `None` for a payment matrixhost collected itself (it is the newest there is).
pub async fn record_payment_of_subscription(tx: &mut Tx<'_>, subscription: &str, failed: bool, reported_at: Option<DateTime<Utc>>) -> DomainResult<PaymentRecorded> {
    let row = sqlx::query("SELECT id, payment_event_at FROM billing_plans WHERE stripe_subscription_id = $1").bind(subscription).fetch_optional(&mut **tx).await?;
    let Some(row) = row else { return Ok(PaymentRecorded::UnknownSubscription) };
    if let (Some(at), Some(last)) = (reported_at, row.opt_text("payment_event_at")?) {
        if ts(at) < last {
            return Ok(PaymentRecorded::Stale);
        }
    }
    record_payment(tx, &row.text("id")?, failed, reported_at).await?;
    Ok(PaymentRecorded::Applied)
}

/// R12: pays an open invoice of the organization now with the card on file; paid, it lifts the
/// block of the plan it is for. A refused card leaves it open (and says so).
pub async fn pay_open_invoice(tx: &mut Tx<'_>, stripe: &StripeApi, org_id: &str, invoice_id: &str, now: DateTime<Utc>) -> DomainResult<()> {
    let Some(invoice) = invoices::get(tx, org_id, invoice_id).await? else { return Err(DomainError::NotFound("invoice")) };
    if invoice.status != "open" {
        return Err(DomainError::conflict(ErrorCode::Conflict, format!("the invoice is {}, not open", invoice.status)));
    }
    let paid = stripe.pay_invoice(invoice_id).await.map_err(|e| DomainError::from_stripe("card", e))?;
    invoices::record(tx, &(&paid).into(), now).await?;
    if paid.status != "paid" {
        return Err(DomainError::Payment { code: ErrorCode::PaymentFailed, field: "card".into(), message: "The card was refused. Replace the card above, then pay again.".into() });
    }
    if let Some(subscription) = &paid.subscription {
        record_payment_of_subscription(tx, subscription, false, None).await?;
    }
    Ok(())
}

/// R12 (operator, test builds only): a failed payment blocks the subscription's homeserver
/// until it is settled.
pub async fn set_payment_failed(db: &Db, id: &str, failed: bool) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    record_payment(&mut tx, id, failed, None).await?;
    tx.commit().await?;
    Ok(())
}

/// R12: records a payment's outcome: `past_due` after a failed one (the reconciler blocks the
/// homeserver), `active` after a paid one. `event_at`: when the payment processor's event was
/// created, so an older event arriving later can be told apart.
pub async fn record_payment(tx: &mut Tx<'_>, id: &str, failed: bool, event_at: Option<DateTime<Utc>>) -> DomainResult<()> {
    let status = if failed { "past_due" } else { "active" };
    let done = sqlx::query("UPDATE billing_plans SET status = $1, payment_event_at = COALESCE($2, payment_event_at), version = version + 1 WHERE id = $3")
        .bind(status)
        .bind(event_at.map(ts))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::NotFound("billing plan"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn r11_anniversaries_keep_the_day_of_month() {
        let anchor = at(2026, 1, 31);
        assert_eq!(next_anniversary(anchor, anchor, BillingPeriod::Monthly), at(2026, 2, 28));
        assert_eq!(next_anniversary(anchor, at(2026, 2, 28), BillingPeriod::Monthly), at(2026, 3, 31));
        assert_eq!(next_anniversary(anchor, anchor, BillingPeriod::Annual), at(2027, 1, 31));
    }

    #[test]
    fn r11_a_pending_downgrade_applies_at_the_anniversary() {
        let t0 = at(2026, 1, 10);
        let tier = |s| PlanTier::parse(s).unwrap();
        let mut sub = Subscription {
            id: "bp_x".into(),
            plan: tier("nickel"),
            active_plan: tier("gold"),
            pending_plan: Some(tier("nickel")),
            billing_period: BillingPeriod::Monthly,
            additional_users: AdditionalUsers::default(),
            payment_method_id: None,
            status: BillingStatus::Active,
            anniversary_anchor: t0,
            current_period_start: t0,
            current_period_end: at(2026, 2, 10),
            created_at: t0,
            updated_at: t0,
            version: 1,
            applied_version: Some(1),
            host: None,
            stripe: None,
            card: None,
        };
        sub.settle(at(2026, 2, 9));
        assert_eq!(sub.active_plan.as_str(), "gold");
        sub.settle(at(2026, 4, 15));
        assert_eq!(sub.active_plan.as_str(), "nickel");
        assert!(sub.pending_plan.is_none());
        assert_eq!((sub.current_period_start, sub.current_period_end), (at(2026, 4, 10), at(2026, 5, 10)));
    }
}
