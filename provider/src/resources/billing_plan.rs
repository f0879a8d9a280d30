//! `matrixhost_billing_plan`: a subscription to a plan tier (R5, R10, R11, R13).

use async_trait::async_trait;
use matrixhost_api::{billing_page_url, AdditionalUsers, BillingPeriod, BillingPlan, BillingStatus, BillingPlanCreate, PaymentMethodId, PlanTier};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::Diagnostics;

use super::managed::{ApiResource, Planned, Write};
use super::{check_int, check_str, differs, known, opt_ts, seg, ts, unknown, wait_applied, APPLY_WAIT_LIMIT};
use crate::client::{ApiFailure, Client};
use crate::diag;
use crate::provider::Ctx;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{opt_s, or_default, s, Num, Value, VN, VS};

pub struct BillingPlanResource;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BillingPlanState {
    pub id: VS,
    pub plan: VS,
    pub billing_period: VS,
    pub additional_users: VN,
    pub payment_method_id: VS,
    pub status: VS,
    pub active_plan: VS,
    pub pending_plan: VS,
    pub pending_change_at: VS,
    pub current_period_start: VS,
    pub current_period_end: VS,
    pub mau_cap: VN,
    pub card_brand: VS,
    pub card_last4: VS,
}



/// The inputs as they will be applied: the configuration with its defaults.
fn inputs(config: &BillingPlanState) -> BillingPlanState {
    BillingPlanState {
        plan: config.plan.clone(),
        billing_period: or_default(&config.billing_period, BillingPeriod::default().as_str().to_owned()),
        additional_users: or_default(&config.additional_users, Num::int(0)),
        payment_method_id: config.payment_method_id.clone(),
        ..Default::default()
    }
}

fn same_inputs(a: &BillingPlanState, b: &BillingPlanState) -> bool {
    a.plan == b.plan && a.billing_period == b.billing_period && a.additional_users == b.additional_users && a.payment_method_id == b.payment_method_id
}



fn path(id: &str) -> String {
    format!("/v1/billing-plans/{}", seg(id))
}

#[async_trait]
impl ApiResource for BillingPlanResource {
    type State = BillingPlanState;
    type Object = BillingPlan;
    type CreateBody = BillingPlanCreate;
    type UpdateBody = BillingPlanCreate;

    const TYPE: &'static str = "matrixhost_billing_plan";
    const NOUN: &'static str = "billing plan";
    const FIELDS: &'static [&'static str] = &["plan", "billing_period", "additional_users", "payment_method_id"];

    fn schema() -> Schema {
        BlockBuilder::new(
            "A subscription to a matrixhost plan tier. Each homeserver needs its own billing plan. Payment is in advance for each billing period (R11), from the organization's card on file (added on the console's billing page) or the card named by `payment_method_id`; a refused card fails the apply and changes nothing. An upgrade or more `additional_users` start a new period now, paid in full, with the unused time of the old one credited; fewer `additional_users` are credited pro rata on the next invoice (R10). A downgrade plans as an in-place update and takes effect at the subscription's anniversary, so `active_plan` keeps the old tier until `pending_change_at`. An update returns once the homeserver paying with the plan runs with it (its MAU cap and resource limits), so the next plan is empty and users see the change at once.",
        )
        .computed("id", T::String, "The billing plan's id (`bp_...`).")
        .required("plan", T::String, "The plan tier from the catalog, e.g. `nickel`, `silver`, `gold`, `platinum` (see the `matrixhost_plans` data source). Changing it is an in-place update: an upgrade applies at once; a downgrade waits for the anniversary (R11).")
        .optional_computed("billing_period", T::String, "How often the subscription is paid in advance: `monthly` or `annual`. Defaults to `monthly`. A change applies from the next renewal.")
        .optional_computed("additional_users", T::Number, "Additional Users on top of the plan's MAU (R10): they raise the MAU cap, not the resources, and are charged at the plan's price per MAU. Defaults to `0`.")
        .optional("payment_method_id", T::String, "The payment processor's payment-method id (`pm_...`). Card data never reaches matrixhost (R13).")
        .computed("status", T::String, "Payment state: `active`, or `past_due` when the last payment failed (homeservers on it are then blocked, R12).")
        .computed("active_plan", T::String, "The tier in force now. After a downgrade it keeps the old tier until `pending_change_at` (R11).")
        .computed("pending_plan", T::String, "A downgrade waiting for the anniversary, if any (R11).")
        .computed("pending_change_at", T::String, "When the pending downgrade takes effect (RFC 3339), if there is one.")
        .computed("current_period_start", T::String, "Start of the current paid period (RFC 3339).")
        .computed("current_period_end", T::String, "End of the current paid period: the subscription's anniversary and next payment date (RFC 3339).")
        .computed("mau_cap", T::Number, "The MAU cap in force: the active plan's MAU plus `additional_users` (R5, R10).")
        .computed("card_brand", T::String, "The brand of the card payments are taken from (the organization's card on file), e.g. `visa`; empty when the server takes no payments.")
        .computed("card_last4", T::String, "The last four digits of that card (R13: matrixhost keeps nothing more of it).")
        .schema()
    }

    /// Rules on the inputs that need no network; unknown values pass.
    fn check(diags: &mut Diagnostics, c: &BillingPlanState) {
        check_str(diags, "plan", &c.plan, PlanTier::parse);
        check_str(diags, "billing_period", &c.billing_period, BillingPeriod::parse);
        check_int(diags, "additional_users", &c.additional_users, AdditionalUsers::parse);
        check_str(diags, "payment_method_id", &c.payment_method_id, PaymentMethodId::parse);
    }

    fn plan_new(config: &BillingPlanState) -> BillingPlanState {
        let mut planned = inputs(config);
        unknown(&mut planned.id);
        unknown_derived(&mut planned);
        planned
    }

    fn plan_change(_diags: &mut Diagnostics, prior: &BillingPlanState, config: &BillingPlanState) -> Planned<BillingPlanState> {
        let wanted = inputs(config);
        if same_inputs(&wanted, prior) {
            return Planned { state: prior.clone(), replace: vec![] };
        }
        let mut planned = prior.clone();
        planned.plan = wanted.plan;
        planned.billing_period = wanted.billing_period;
        planned.additional_users = wanted.additional_users;
        planned.payment_method_id = wanted.payment_method_id;
        // What the server derives may change with the update (and with the clock).
        unknown_derived(&mut planned);
        Planned { state: planned, replace: vec![] }
    }

    /// R5: the tier must be in the catalog.
    async fn check_catalog(ctx: &Ctx, diags: &mut Diagnostics, planned: &BillingPlanState, prior: Option<&BillingPlanState>) {
        if prior.is_some_and(|prior| !differs(&planned.plan, &prior.plan)) {
            return;
        }
        let Value::Value(tier) = &planned.plan else { return };
        let Ok(tier) = PlanTier::parse(tier) else { return };
        if let Some(catalog) = ctx.catalog().await {
            if let Err(e) = catalog.plan(&tier) {
                diag::invalid(diags, "plan", e.message);
            }
        }
    }

    fn create_path(_diags: &mut Diagnostics, _planned: &BillingPlanState) -> Option<String> {
        Some("/v1/billing-plans".to_owned())
    }

    fn item_path(state: &BillingPlanState) -> Option<String> {
        state.id.as_ref_option().map(|id| path(id))
    }

    fn version(bp: &BillingPlan) -> i64 {
        bp.version
    }

    fn to_state(bp: &BillingPlan, _reference: &BillingPlanState) -> BillingPlanState {
        BillingPlanState {
            id: s(&bp.id),
            plan: s(bp.plan.as_str()),
            billing_period: s(bp.billing_period.as_str()),
            additional_users: Value::Value(Num::int(i64::from(bp.additional_users.get()))),
            payment_method_id: opt_s(bp.payment_method_id.as_ref()),
            status: s(bp.status.as_str()),
            active_plan: s(bp.active_plan.as_str()),
            pending_plan: opt_s(bp.pending_plan.as_ref()),
            pending_change_at: opt_ts(bp.pending_change_at),
            current_period_start: s(ts(bp.current_period_start)),
            current_period_end: s(ts(bp.current_period_end)),
            mau_cap: Value::Value(Num::int(i64::from(bp.mau_cap))),
            card_brand: opt_s(bp.card.as_ref().map(|c| &c.brand)),
            card_last4: opt_s(bp.card.as_ref().map(|c| &c.last4)),
        }
    }

    /// The request body from planned (known) inputs.
    fn create_body(diags: &mut Diagnostics, p: &BillingPlanState) -> Option<BillingPlanCreate> {
        let before = diags.errors.len();
        let plan = known(diags, "plan", &p.plan).and_then(|v| check_str(diags, "plan", &s(v), PlanTier::parse));
        let period = known(diags, "billing_period", &p.billing_period).and_then(|v| check_str(diags, "billing_period", &s(v), BillingPeriod::parse));
        let users = known(diags, "additional_users", &p.additional_users).and_then(|v| check_int(diags, "additional_users", &Value::Value(v), AdditionalUsers::parse));
        let payment = match &p.payment_method_id {
            Value::Value(v) => check_str(diags, "payment_method_id", &s(v.clone()), PaymentMethodId::parse).map(Some),
            _ => Some(None),
        };
        if diags.errors.len() > before {
            return None;
        }
        Some(BillingPlanCreate { plan: plan?, billing_period: period?, additional_users: users?, payment_method_id: payment? })
    }

    fn update_body(diags: &mut Diagnostics, planned: &BillingPlanState) -> Option<BillingPlanCreate> {
        Self::create_body(diags, planned)
    }

    /// An update returns once the homeserver it pays for runs with the new cap and limits.
    async fn settle(client: &Client, diags: &mut Diagnostics, write: Write, bp: BillingPlan, _prior: Option<&BillingPlanState>, _planned: &BillingPlanState) -> Option<BillingPlan> {
        let bp = if write == Write::Create { bp } else { wait_applied(diags, client, &path(&bp.id), "billing plan change", bp, APPLY_WAIT_LIMIT).await };
        if bp.status == BillingStatus::PastDue {
            // R12: the change is applied, but nothing on the plan works until it is paid.
            diag::root_error(
                diags,
                format!("Billing plan {}: a payment failed", bp.id),
                format!("The last payment for this billing plan failed, so its homeserver is blocked for all users until it is paid (R12). {}.", how_to_pay(client)),
            );
        }
        Some(bp)
    }

    async fn lookup(client: &Client, id: &str) -> Result<Result<Option<BillingPlan>, ApiFailure>, String> {
        Ok(client.get_opt(&path(id)).await)
    }
}

/// Marks unknown what the server derives from the inputs.
/// R12: what a customer does about a failed payment, and where.
pub(crate) fn how_to_pay(client: &Client) -> String {
    format!("Pay the open invoice, or replace the card, on the console's billing page ({})", billing_page_url(client.base_url()))
}

fn unknown_derived(planned: &mut BillingPlanState) {
    for v in [&mut planned.status, &mut planned.active_plan, &mut planned.pending_plan, &mut planned.pending_change_at, &mut planned.current_period_start, &mut planned.current_period_end] {
        unknown(v);
    }
    unknown(&mut planned.mau_cap);
    unknown(&mut planned.card_brand);
    unknown(&mut planned.card_last4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_planned_and_rules_checked() {
        let config = BillingPlanState { plan: s("silver"), ..Default::default() };
        let p = inputs(&config);
        assert_eq!(p.billing_period, s("monthly"));
        assert_eq!(p.additional_users, Value::Value(Num::int(0)));
        let mut d = Diagnostics::default();
        BillingPlanResource::check(&mut d, &BillingPlanState { plan: s("Silver!"), billing_period: s("weekly"), additional_users: Value::Value(Num(1.5)), payment_method_id: s("4242424242424242"), ..Default::default() });
        assert_eq!(d.errors.len(), 4, "{:?}", d.errors);
        assert!(d.errors.iter().all(|e| !e.detail.contains("4242")));
        let mut d = Diagnostics::default();
        BillingPlanResource::check(&mut d, &BillingPlanState { plan: Value::Unknown, additional_users: Value::Unknown, ..Default::default() });
        assert!(d.errors.is_empty());
    }
}
