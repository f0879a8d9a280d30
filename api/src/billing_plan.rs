//! `BillingPlan`: a subscription to a plan tier (R5, R10, R11, R12, R13).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ApplyStatus;
use crate::domain::{AdditionalUsers, BillingPeriod, PaymentMethodId, PlanTier};

/// Payment state of a subscription. R12: `past_due` blocks every homeserver on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingStatus {
    /// Paid in advance for the current period (R11).
    Active,
    /// The last payment failed; homeservers are blocked until it is paid (R12).
    PastDue,
}

impl BillingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PastDue => "past_due",
        }
    }
}

/// R10, R11: the share of `amount_cents` that `remaining_seconds` of a `period_seconds` period is
/// worth, rounded to the nearest cent (halves away from zero). The one place a pro-rata amount is
/// computed.
pub fn prorate_cents(amount_cents: i64, remaining_seconds: i64, period_seconds: i64) -> i64 {
    if period_seconds <= 0 {
        return 0;
    }
    let remaining = i128::from(remaining_seconds.clamp(0, period_seconds));
    let scaled = i128::from(amount_cents) * remaining;
    let period = i128::from(period_seconds);
    let rounded = (scaled.abs() * 2 + period) / (period * 2);
    (if scaled < 0 { -rounded } else { rounded }) as i64
}

/// The card a billing plan is paid with: what the payment processor tells about it, and nothing
/// more (R13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCard {
    /// The card's brand as the processor names it, e.g. `visa`.
    pub brand: String,
    /// The last four digits.
    pub last4: String,
}

/// Body of `POST /v1/billing-plans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingPlanCreate {
    /// Requested plan tier from the catalog.
    pub plan: PlanTier,
    /// Billing period; payment is in advance for each period (R11).
    #[serde(default)]
    pub billing_period: BillingPeriod,
    /// Additional Users on top of the plan's MAU (R10).
    #[serde(default)]
    pub additional_users: AdditionalUsers,
    /// Payment processor payment-method id (R13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_id: Option<PaymentMethodId>,
}

/// Body of `PUT /v1/billing-plans/{id}`: the whole desired state of the mutable fields.
/// R11: an upgrade applies at once, a downgrade at the anniversary.
pub type BillingPlanUpdate = BillingPlanCreate;

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BillingPlan {
    pub id: String,
    /// The plan as requested; it reads back as requested even while a downgrade is pending.
    pub plan: PlanTier,
    /// The tier in force now (R11: a downgrade keeps the old tier until the anniversary).
    pub active_plan: PlanTier,
    /// A downgrade waiting for the anniversary, if any (R11).
    pub pending_plan: Option<PlanTier>,
    /// When the pending downgrade takes effect (the end of the current period).
    pub pending_change_at: Option<DateTime<Utc>>,
    pub billing_period: BillingPeriod,
    pub additional_users: AdditionalUsers,
    pub payment_method_id: Option<PaymentMethodId>,
    /// The card payments are taken from, when the organization has one on file (R13: brand and
    /// last four digits only).
    #[serde(default)]
    pub card: Option<PaymentCard>,
    pub status: BillingStatus,
    /// MAU cap in force: the active plan's MAU plus Additional Users (R5, R10).
    pub mau_cap: u32,
    pub current_period_start: DateTime<Utc>,
    /// The subscription's anniversary: the next payment date (R11).
    pub current_period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; send it back as `If-Match`.
    pub version: i64,
    /// Whether the homeserver this plan pays for runs with this version's MAU cap and limits.
    #[serde(default)]
    pub apply_status: ApplyStatus,
    /// Why the homeserver could not apply this version, when `apply_status` is `failed`.
    #[serde(default)]
    pub apply_error: Option<String>,
}

/// The console page where a customer adds a card and pays open invoices (R11, R12).
pub const BILLING_PAGE_PATH: &str = "/console/billing";

/// The billing page of the server at `base_url`: where errors about payments send the customer.
pub fn billing_page_url(base_url: &str) -> String {
    format!("{}{BILLING_PAGE_PATH}", base_url.trim_end_matches('/'))
}

/// What `POST /v1/stripe/webhook` did with a Stripe event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StripeEventOutcome {
    /// It changed a billing plan's payment state (R12), or what is kept of an invoice.
    Applied,
    /// This event was delivered before; nothing happened twice.
    Duplicate,
    /// Older than what is already known: the payment event applied to its billing plan, or a
    /// later stage of its invoice.
    Stale,
    /// About a subscription that is no billing plan here.
    UnknownSubscription,
    /// A type matrixhost does not act on; recorded all the same.
    Ignored,
}

impl StripeEventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::UnknownSubscription => "unknown_subscription",
            Self::Ignored => "ignored",
        }
    }
}

/// The answer to Stripe for a verified event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StripeEventReceipt {
    pub event_id: String,
    pub outcome: StripeEventOutcome,
}

#[cfg(test)]
mod tests {
    use super::prorate_cents;

    #[test]
    fn r10_pro_rata_rounds_to_the_nearest_cent() {
        assert_eq!(prorate_cents(6000, 15, 30), 3000);
        assert_eq!(prorate_cents(1000, 1, 3), 333);
        assert_eq!(prorate_cents(1000, 2, 3), 667);
        assert_eq!(prorate_cents(-1000, 2, 3), -667);
        assert_eq!(prorate_cents(5, 1, 2), 3, "halves go away from zero");
        assert_eq!(prorate_cents(1000, 40, 30), 1000, "never more than the whole");
        assert_eq!(prorate_cents(1000, -5, 30), 0);
        assert_eq!(prorate_cents(1000, 5, 0), 0);
    }
}
