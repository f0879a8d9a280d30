//! What a change to a billing plan costs, in US cents (R10, R11). Pure arithmetic: what was
//! billed before, what is billed after, the paid period and the moment of the change.
//!
//! - An upgrade, more Additional Users or another billing period start a new period now, paid
//!   in full in advance at the new tier and quantity (R10: Additional Users are charged in full
//!   when bought; R11: an upgrade applies at once). The unused part of the old period is credited
//!   pro rata on that same invoice, so the charge now is the prorated difference.
//! - Fewer Additional Users keep the period; the unused time of those removed is credited pro
//!   rata and settled with the next invoice (R10, R11).
//! - A downgrade costs nothing now: it takes effect, and is billed, from the anniversary (R11).

use chrono::{DateTime, Utc};
use matrixhost_api::{prorate_cents, BillingPeriod, Plan};

/// What a subscription bills: the tier in force, the tier its next renewal bills (a pending
/// downgrade), the period and the Additional Users.
#[derive(Debug, Clone, Copy)]
pub struct Billing<'c> {
    pub active: &'c Plan,
    pub renewal: &'c Plan,
    pub period: BillingPeriod,
    pub additional_users: u32,
}

impl Billing<'_> {
    /// The quantity billed now: the tier's MAU plus Additional Users (R10).
    pub fn active_quantity(&self) -> u32 {
        self.active.mau_cap(additional(self.additional_users))
    }

    /// The quantity the next renewal bills.
    pub fn renewal_quantity(&self) -> u32 {
        self.renewal.mau_cap(additional(self.additional_users))
    }

    /// A whole period of the tier in force.
    pub fn period_amount_cents(&self) -> i64 {
        self.active.price_per_mau_per_period_cents(self.period) * i64::from(self.active_quantity())
    }
}

fn additional(n: u32) -> matrixhost_api::AdditionalUsers {
    matrixhost_api::AdditionalUsers::parse(i64::from(n)).unwrap_or_default()
}

/// The processor's plan for a tier and period: what a Stripe subscription item names.
pub fn stripe_plan_id(plan: &Plan, period: BillingPeriod) -> String {
    format!("mh_{}_{}", plan.tier, period.as_str())
}

/// A credit (a negative amount) and what the invoice says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub amount_cents: i64,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// A new period starts now and is charged in full; `credit` is the old period's unused part.
    NewPeriod { credit: Credit },
    /// The period stays; `credit`, if any, is settled with the next invoice.
    SamePeriod { credit: Option<Credit> },
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// R10, R11: how the change from `before` to `after` at `now` is settled, within the paid
/// period `start..end`.
pub fn settle(before: &Billing, after: &Billing, (start, end): (DateTime<Utc>, DateTime<Utc>), now: DateTime<Utc>) -> Settlement {
    let remaining = (end - now).num_seconds();
    let whole = (end - start).num_seconds();
    let new_period = after.active.tier != before.active.tier || after.additional_users > before.additional_users || after.period != before.period;
    if new_period {
        let unused = prorate_cents(before.period_amount_cents(), remaining, whole);
        let description = format!("Unused time on {} × {} from {} to {}", before.active.name, before.active_quantity(), day(now), day(end));
        return Settlement::NewPeriod { credit: Credit { amount_cents: -unused, description } };
    }
    let removed = before.additional_users.saturating_sub(after.additional_users);
    if removed == 0 {
        return Settlement::SamePeriod { credit: None };
    }
    let amount = before.active.price_per_mau_per_period_cents(before.period) * i64::from(removed);
    let unused = prorate_cents(amount, remaining, whole);
    let description = format!("Unused time on {removed} Additional Users ({}) from {} to {}", before.active.name, day(now), day(end));
    Settlement::SamePeriod { credit: Some(Credit { amount_cents: -unused, description }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use matrixhost_api::{Catalog, PlanTier};

    fn catalog() -> Catalog {
        crate::config::default_catalog()
    }

    fn tier<'c>(catalog: &'c Catalog, name: &str) -> &'c Plan {
        catalog.plan(&PlanTier::parse(name).unwrap()).unwrap()
    }

    fn at(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, d, 0, 0, 0).unwrap()
    }

    /// A 30-day April period, changed on day 11: 20 of 30 days left.
    fn april() -> (DateTime<Utc>, DateTime<Utc>) {
        (at(1), Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap())
    }

    #[test]
    fn r11_an_upgrade_credits_the_unused_part_of_the_old_period() {
        let c = catalog();
        let (nickel, silver) = (tier(&c, "nickel"), tier(&c, "silver"));
        let before = Billing { active: nickel, renewal: nickel, period: BillingPeriod::Monthly, additional_users: 2 };
        let after = Billing { active: silver, renewal: silver, period: BillingPeriod::Monthly, additional_users: 2 };
        let Settlement::NewPeriod { credit } = settle(&before, &after, april(), at(11)) else { panic!("an upgrade starts a new period") };
        // Nickel: 12 × $5 = $60 a month; 20 of 30 days unused: $40.
        assert_eq!(credit.amount_cents, -4000);
        assert_eq!(after.period_amount_cents(), 52 * 400, "Silver: 50 MAU + 2 at $4");
        assert!(credit.description.contains("Nickel × 12"), "{}", credit.description);
    }

    #[test]
    fn r10_more_additional_users_start_a_new_period_and_fewer_are_credited_pro_rata() {
        let c = catalog();
        let silver = tier(&c, "silver");
        let five = Billing { active: silver, renewal: silver, period: BillingPeriod::Monthly, additional_users: 5 };
        let eight = Billing { additional_users: 8, ..five };
        assert!(matches!(settle(&five, &eight, april(), at(11)), Settlement::NewPeriod { credit } if credit.amount_cents == -prorate_cents(55 * 400, 20, 30)));
        let two = Billing { additional_users: 2, ..five };
        // 3 removed × $4 × 20/30 = $8.
        assert_eq!(settle(&five, &two, april(), at(11)), Settlement::SamePeriod { credit: Some(Credit { amount_cents: -800, description: "Unused time on 3 Additional Users (Silver) from 2026-04-11 to 2026-05-01".into() }) });
    }

    #[test]
    fn r11_a_downgrade_costs_nothing_now() {
        let c = catalog();
        let (gold, silver) = (tier(&c, "gold"), tier(&c, "silver"));
        let before = Billing { active: gold, renewal: gold, period: BillingPeriod::Annual, additional_users: 0 };
        let after = Billing { renewal: silver, ..before };
        assert_eq!(settle(&before, &after, april(), at(11)), Settlement::SamePeriod { credit: None });
        assert_eq!(after.renewal_quantity(), 50);
        assert_eq!(before.period_amount_cents(), i64::from(gold.mau) * i64::from(gold.price_per_mau_cents) * 12, "a year is twelve months");
    }
}
