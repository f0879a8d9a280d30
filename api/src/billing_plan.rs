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

/// What `POST /v1/stripe/webhook` did with a Stripe event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StripeEventOutcome {
    /// It changed a billing plan's payment state (R12).
    Applied,
    /// This event was delivered before; nothing happened twice.
    Duplicate,
    /// Older than the payment event already applied to its billing plan.
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
