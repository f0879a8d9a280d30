//! `matrixhost_billing_plan`: a subscription to a plan tier (R5, R10, R11, R13).

use std::sync::Arc;

use async_trait::async_trait;
use matrixhost_api::{AdditionalUsers, BillingPeriod, BillingPlan, BillingPlanCreate, PaymentMethodId, PlanTier};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{
    check_int, check_str, differs, import_not_found, known, opt_ts, private, seg, ts, unknown, version_of, wait_applied,
    PrivateState, APPLY_WAIT_LIMIT,
};
use crate::client::idempotency_key;
use crate::diag;
use crate::guarded;
use crate::provider::Ctx;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{opt_s, or_default, s, Num, Value, VN, VS};

pub const TYPE: &str = "matrixhost_billing_plan";
const FIELDS: &[&str] = &["plan", "billing_period", "additional_users", "payment_method_id"];

pub struct BillingPlanResource {
    pub ctx: Arc<Ctx>,
}

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
}

pub fn schema() -> Schema {
    BlockBuilder::new(
        "A subscription to a matrixhost plan tier. Each homeserver needs its own billing plan. Payment is in advance for each billing period (R11): an upgrade applies at once, a downgrade plans as an in-place update and takes effect at the subscription's anniversary, so `active_plan` keeps the old tier until `pending_change_at`. An update returns once the homeserver paying with the plan runs with it (its MAU cap and resource limits), so the next plan is empty and users see the change at once.",
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
    .schema()
}

/// Rules on the inputs that need no network; unknown values pass.
fn check(diags: &mut Diagnostics, c: &BillingPlanState) {
    check_str(diags, "plan", &c.plan, PlanTier::parse);
    check_str(diags, "billing_period", &c.billing_period, BillingPeriod::parse);
    check_int(diags, "additional_users", &c.additional_users, AdditionalUsers::parse);
    check_str(diags, "payment_method_id", &c.payment_method_id, PaymentMethodId::parse);
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

/// The request body from planned (known) inputs.
fn request(diags: &mut Diagnostics, p: &BillingPlanState) -> Option<BillingPlanCreate> {
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

pub fn from_api(bp: &BillingPlan) -> BillingPlanState {
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
    }
}

fn path(id: &str) -> String {
    format!("/v1/billing-plans/{}", seg(id))
}

impl BillingPlanResource {
    /// R5: the tier must be in the catalog. Best effort at plan time (the server checks again).
    async fn check_catalog(&self, diags: &mut Diagnostics, planned: &BillingPlanState) {
        let Value::Value(tier) = &planned.plan else { return };
        let Ok(tier) = PlanTier::parse(tier) else { return };
        if let Some(catalog) = self.ctx.catalog().await {
            if let Err(e) = catalog.plan(&tier) {
                diag::invalid(diags, "plan", e.message);
            }
        }
    }

    async fn do_read(&self, diags: &mut Diagnostics, state: BillingPlanState) -> Option<(BillingPlanState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let Value::Value(id) = &state.id else { return None };
        match client.get_opt::<BillingPlan>(&path(id)).await {
            Ok(Some(bp)) => Some((from_api(&bp), private(bp.version))),
            // Deleted out of band: Terraform removes it from the state and plans it again.
            Ok(None) => None,
            Err(e) => {
                diag::api_error(diags, "Cannot read billing plan", &e, FIELDS);
                Some((state, Value::Null))
            }
        }
    }

    async fn do_plan_update(
        &self,
        diags: &mut Diagnostics,
        prior: BillingPlanState,
        config: BillingPlanState,
        prior_private: PrivateState,
    ) -> Option<(BillingPlanState, PrivateState, Vec<AttributePath>)> {
        let wanted = inputs(&config);
        if same_inputs(&wanted, &prior) {
            return Some((prior, prior_private, vec![]));
        }
        let mut planned = prior.clone();
        planned.plan = wanted.plan;
        planned.billing_period = wanted.billing_period;
        planned.additional_users = wanted.additional_users;
        planned.payment_method_id = wanted.payment_method_id;
        if differs(&planned.plan, &prior.plan) {
            self.check_catalog(diags, &planned).await;
        }
        // What the server derives may change with the update (and with the clock).
        for v in [&mut planned.status, &mut planned.active_plan, &mut planned.pending_plan, &mut planned.pending_change_at, &mut planned.current_period_start, &mut planned.current_period_end] {
            unknown(v);
        }
        unknown(&mut planned.mau_cap);
        Some((planned, prior_private, vec![]))
    }
}

#[async_trait]
impl Resource for BillingPlanResource {
    type State<'a> = BillingPlanState;
    type PrivateState<'a> = PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        check(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_read(diags, state))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = inputs(&config);
        for v in [
            &mut planned.id,
            &mut planned.status,
            &mut planned.active_plan,
            &mut planned.pending_plan,
            &mut planned.pending_change_at,
            &mut planned.current_period_start,
            &mut planned.current_period_end,
        ] {
            unknown(v);
        }
        unknown(&mut planned.mau_cap);
        self.check_catalog(diags, &planned).await;
        Some((planned, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        guarded!(diags, self.do_plan_update(diags, prior, config, prior_private))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let body = request(diags, &planned)?;
            match client.create::<_, BillingPlan>("/v1/billing-plans", &body, &idempotency_key()).await {
                Ok(bp) => Some((from_api(&bp), private(bp.version))),
                Err(e) => {
                    diag::api_error(diags, "Cannot create billing plan", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        planned_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let id = known(diags, "id", &prior.id)?;
            let body = request(diags, &planned)?;
            match client.put::<_, BillingPlan>(&path(&id), &body, version_of(&planned_private)).await {
                Ok(bp) => {
                    // The homeserver it pays for runs with the new cap and limits before the apply ends.
                    let bp = wait_applied(diags, &client, &path(&id), "billing plan change", bp, APPLY_WAIT_LIMIT).await;
                    Some((from_api(&bp), private(bp.version)))
                }
                Err(e) => {
                    diag::api_error(diags, "Cannot update billing plan", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let id = known(diags, "id", &prior.id)?;
            match client.delete(&path(&id)).await {
                Ok(_) => Some(()),
                Err(e) if e.is_not_found() => Some(()),
                Err(e) => {
                    diag::api_error(diags, "Cannot delete billing plan", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let id = id.trim().to_owned();
            match client.get_opt::<BillingPlan>(&path(&id)).await {
                Ok(Some(bp)) => Some((from_api(&bp), private(bp.version))),
                Ok(None) => {
                    import_not_found(diags, "billing plan", &id);
                    None
                }
                Err(e) => {
                    diag::api_error(diags, "Cannot import billing plan", &e, FIELDS);
                    None
                }
            }
        })
    }
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
        check(&mut d, &BillingPlanState { plan: s("Silver!"), billing_period: s("weekly"), additional_users: Value::Value(Num(1.5)), payment_method_id: s("4242424242424242"), ..Default::default() });
        assert_eq!(d.errors.len(), 4, "{:?}", d.errors);
        assert!(d.errors.iter().all(|e| !e.detail.contains("4242")));
        let mut d = Diagnostics::default();
        check(&mut d, &BillingPlanState { plan: Value::Unknown, additional_users: Value::Unknown, ..Default::default() });
        assert!(d.errors.is_empty());
    }
}
