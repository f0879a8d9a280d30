//! Billing plans: subscriptions (R5, R8, R10, R11, R15). Table `billing_plans`.

use chrono::{DateTime, Months, Utc};
use matrixhost_api::{
    ErrorCode, check_reserved_within_cap, AdditionalUsers, BillingPeriod, BillingPlan, BillingPlanCreate, BillingPlanUpdate,
    BillingStatus, Catalog, HomeserverStatus, PaymentMethodId, Plan, PlanChange, PlanTier,
};
use sqlx::any::AnyRow;

use super::apply::{applied_at_write, apply_status, HostOf};
use super::{check_version, homeservers, DomainError, DomainResult, PageRequest, WriteContext};
use crate::db::{lock_row, ts, Db, RowExt, Tx};

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
         anniversary_anchor, current_period_start, current_period_end, created_at, updated_at, version"
    };
}
const COLUMNS: &str = columns!();
/// What a read adds: how far the homeserver on the plan has got with it.
const READ_COLUMNS: &str = concat!(
    columns!(),
    ", applied_version, \
     (SELECT h.status FROM homeservers h WHERE h.billing_plan_id = billing_plans.id) AS hs_status, \
     (SELECT h.status_reason FROM homeservers h WHERE h.billing_plan_id = billing_plans.id) AS hs_status_reason"
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
/// starts now (R11).
pub async fn create(tx: &mut Tx<'_>, org_id: &str, email_verified: bool, body: BillingPlanCreate, now: DateTime<Utc>, catalog: &Catalog) -> DomainResult<BillingPlan> {
    if !email_verified {
        return Err(DomainError::Forbidden { code: ErrorCode::EmailNotVerified, message: "R15: the organization's email address must be verified before it can subscribe".into() });
    }
    catalog.plan(&body.plan).map_err(|e| DomainError::rule("plan", e))?;
    let sub = Subscription {
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
    };
    sqlx::query(&format!("INSERT INTO billing_plans (org_id, {COLUMNS}, applied_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"))
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
        .bind(sub.applied_version)
        .execute(&mut **tx)
        .await?;
    tracing::info!(billing_plan_id = %sub.id, plan = %sub.plan, "created billing plan");
    sub.to_api(catalog)
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
) -> DomainResult<BillingPlan> {
    let WriteContext { hosted, now, catalog } = ctx;
    lock_row(tx, "billing_plans", id).await?;
    let mut sub = load_or_404(tx, org_id, id, now).await?;
    check_version(expected_version, sub.version, "billing plan")?;
    let stored_version = sub.version;
    let fewer_users = body.additional_users < sub.additional_users;
    apply_plan_change(&mut sub, body.plan, catalog)?;
    sub.additional_users = body.additional_users;
    // Takes effect at the next renewal; the current paid period is kept (R11).
    sub.billing_period = body.billing_period;
    sub.payment_method_id = body.payment_method_id;
    let field = if fewer_users { "additional_users" } else { "plan" };
    check_homeserver_fits(tx, &sub, catalog, field).await?;
    sub.version += 1;
    sub.updated_at = now;
    // Only a hosted homeserver on the plan has to apply the change.
    if let Some(applied) = applied_at_write(hosted && sub.host.is_some(), sub.version) {
        sub.applied_version = Some(applied);
    }
    let done = sqlx::query(
        "UPDATE billing_plans SET plan = $1, active_plan = $2, pending_plan = $3, billing_period = $4, additional_users = $5, \
         payment_method_id = $6, current_period_start = $7, current_period_end = $8, updated_at = $9, version = $10, applied_version = $13 \
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
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::version_conflict("billing plan"));
    }
    tracing::info!(billing_plan_id = %sub.id, plan = %sub.plan, active_plan = %sub.active_plan, "updated billing plan");
    sub.to_api(catalog)
}

pub async fn delete(tx: &mut Tx<'_>, org_id: &str, id: &str, expected_version: Option<i64>, now: DateTime<Utc>) -> DomainResult<()> {
    let sub = load_or_404(tx, org_id, id, now).await?;
    check_version(expected_version, sub.version, "billing plan")?;
    if let Some(hs) = homeservers::on_billing_plan(tx, &sub.id).await? {
        return Err(DomainError::conflict(ErrorCode::InUse, format!("billing plan {} is used by homeserver `{}` ({}); delete the homeserver first", sub.id, hs.name, hs.id)));
    }
    sqlx::query("DELETE FROM billing_plans WHERE id = $1").bind(&sub.id).execute(&mut **tx).await?;
    tracing::info!(billing_plan_id = %sub.id, "deleted billing plan");
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
        };
        sub.settle(at(2026, 2, 9));
        assert_eq!(sub.active_plan.as_str(), "gold");
        sub.settle(at(2026, 4, 15));
        assert_eq!(sub.active_plan.as_str(), "nickel");
        assert!(sub.pending_plan.is_none());
        assert_eq!((sub.current_period_start, sub.current_period_end), (at(2026, 4, 10), at(2026, 5, 10)));
    }
}
