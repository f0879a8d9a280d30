//! The data sources: `matrixhost_regions`, `matrixhost_plans`, `matrixhost_homeserver` (by name
//! or id) and `matrixhost_backups`.

use std::sync::Arc;

use async_trait::async_trait;
use matrixhost_api::{Backup, Homeserver, HomeserverName, Plan, Region};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{DataSource, Diagnostics};

use crate::client::escape;
use crate::diag;
use crate::guarded;
use crate::provider::Ctx;
use crate::resources::homeserver::{from_api, HomeserverState, NoTimeouts};
use crate::resources::{opt_ts, seg, ts};
use crate::schema_builder::{list_of, object, set_of_strings, BlockBuilder, FieldDocs, T};
use crate::values::{opt_s, s, Num, Value, VB, VN, VS};

// ------------------------------------------------------------------ regions ---------------

pub struct RegionsDataSource {
    pub ctx: Arc<Ctx>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionItem {
    pub code: VS,
    pub name: VS,
    pub country: VS,
    pub available: VB,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RegionsState {
    pub available_only: VB,
    pub regions: Value<Vec<RegionItem>>,
}

pub const REGION_FIELDS: FieldDocs = &[
    ("code", "Region code, e.g. `us-east-1`."),
    ("name", "Human-readable name."),
    ("country", "ISO 3166-1 alpha-2 country code of the data centre."),
    ("available", "Whether new homeservers can be created here. R1: only US regions are ever available."),
];

pub fn regions_schema() -> Schema {
    BlockBuilder::new("The hosting regions of the catalog. R1: homeservers run only in available US regions; future or international regions may be listed as not available.")
        .optional("available_only", T::Bool, "When `true`, only the regions where a homeserver can be created now. Defaults to `false`.")
        .computed(
            "regions",
            list_of(object(&[("code", T::String), ("name", T::String), ("country", T::String), ("available", T::Bool)])),
            "The regions, sorted by code.",
        )
        .schema()
}

#[async_trait]
impl DataSource for RegionsDataSource {
    type State<'a> = RegionsState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(regions_schema())
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<Self::State<'a>> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let regions = match client.list_all::<Region>("/v1/regions").await {
                Ok(r) => r,
                Err(e) => {
                    diag::api_error(diags, "Cannot read regions", &e, &[]);
                    return None;
                }
            };
            let only = config.available_only == Value::Value(true);
            let items = regions
                .into_iter()
                .filter(|r| !only || r.available)
                .map(|r| RegionItem { code: s(r.code), name: s(r.name), country: s(r.country), available: Value::Value(r.available) })
                .collect();
            Some(RegionsState { available_only: config.available_only, regions: Value::Value(items) })
        })
    }
}

// -------------------------------------------------------------------- plans ---------------

pub struct PlansDataSource {
    pub ctx: Arc<Ctx>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsItem {
    pub cpu_millicores: VN,
    pub memory_mb: VN,
    pub storage_gb: VN,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanItem {
    pub tier: VS,
    pub name: VS,
    pub mau: VN,
    pub price_per_mau_cents: VN,
    pub limits: Value<LimitsItem>,
    pub support_tier: VS,
    pub e2ee_can_be_disabled: VB,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlansState {
    pub plans: Value<Vec<PlanItem>>,
}

pub const PLAN_FIELDS: FieldDocs = &[
    ("tier", "Tier key, used as `plan` in `matrixhost_billing_plan`, e.g. `silver`."),
    ("name", "Display name, e.g. `Silver`."),
    ("mau", "Monthly active users included (R5, R6)."),
    ("price_per_mau_cents", "Price per MAU per month in US cents; Additional Users cost the same (R10)."),
    ("limits", "Resource limits (R5): `cpu_millicores`, `memory_mb`, and `storage_gb` (the largest volume a homeserver on this plan may have)."),
    ("support_tier", "Support tier (R5): `best_effort`, `prioritised` or `next_business_day`."),
    ("e2ee_can_be_disabled", "Whether end-to-end encryption by default may be turned off on this plan (R22)."),
];

pub fn plans_schema() -> Schema {
    let limits = object(&[("cpu_millicores", T::Number), ("memory_mb", T::Number), ("storage_gb", T::Number)]);
    BlockBuilder::new("The plan tiers of the catalog (R5): each is a number of monthly active users with resource limits and a support tier.")
        .computed(
            "plans",
            list_of(object(&[
                ("tier", T::String),
                ("name", T::String),
                ("mau", T::Number),
                ("price_per_mau_cents", T::Number),
                ("limits", limits),
                ("support_tier", T::String),
                ("e2ee_can_be_disabled", T::Bool),
            ])),
            "The plan tiers, sorted by tier key.",
        )
        .schema()
}

fn plan_item(p: Plan) -> PlanItem {
    PlanItem {
        tier: s(p.tier.as_str()),
        name: s(p.name),
        mau: Value::Value(Num::int(i64::from(p.mau))),
        price_per_mau_cents: Value::Value(Num::int(i64::from(p.price_per_mau_cents))),
        limits: Value::Value(LimitsItem {
            cpu_millicores: Value::Value(Num::int(i64::from(p.limits.cpu_millicores))),
            memory_mb: Value::Value(Num::int(i64::from(p.limits.memory_mb))),
            storage_gb: Value::Value(Num::int(i64::from(p.limits.storage_gb))),
        }),
        support_tier: s(p.support_tier.as_str()),
        e2ee_can_be_disabled: Value::Value(p.e2ee_can_be_disabled),
    }
}

#[async_trait]
impl DataSource for PlansDataSource {
    type State<'a> = PlansState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(plans_schema())
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, _config: Self::State<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<Self::State<'a>> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            match client.list_all::<Plan>("/v1/plans").await {
                Ok(plans) => Some(PlansState { plans: Value::Value(plans.into_iter().map(plan_item).collect()) }),
                Err(e) => {
                    diag::api_error(diags, "Cannot read plans", &e, &[]);
                    None
                }
            }
        })
    }
}

// --------------------------------------------------------------- homeserver ---------------

pub struct HomeserverDataSource {
    pub ctx: Arc<Ctx>,
}

/// The same state as the resource's, without `timeouts`.
pub type HomeserverDataState = HomeserverState<NoTimeouts>;

pub const VOLUME_FIELDS: FieldDocs = &[("size_gb", "Size in GB."), ("encrypted", "Always `true` (R2).")];
pub const CONTROLLER_FIELDS: FieldDocs = &[
    ("entity_name", "Legal name of the customer entity (R19)."),
    ("admin_email", "Contact email of the customer's administrator (R19)."),
];

pub fn homeserver_schema() -> Schema {
    BlockBuilder::new("Reads one homeserver of the organization, by `name` or by `id` (exactly one of them).")
        .optional_computed("id", T::String, "The homeserver's id (`hs_...`). Give this or `name`.")
        .optional_computed("name", T::String, "The homeserver's name. Give this or `id`.")
        .computed("region", T::String, "Region code (R1).")
        .computed("billing_plan_id", T::String, "Id of the billing plan paying for the homeserver.")
        .computed("server_name", T::String, "Matrix server name.")
        .computed("federation_enabled", T::Bool, "Whether federation is on (R9).")
        .computed("registration", T::String, "Who may register: `invite_only`, `open` or `email_domains` (R9).")
        .computed("allowed_email_domains", set_of_strings(), "Whitelisted email domains with `registration = \"email_domains\"` (R9).")
        .computed("guest_access", T::Bool, "Whether read-only guest access is on (R9).")
        .computed("encryption_by_default", T::Bool, "Whether end-to-end encryption is on by default for new rooms (R22).")
        .computed("deletion_protection", T::Bool, "Whether deletion is refused.")
        .computed("volume", object(&[("size_gb", T::Number), ("encrypted", T::Bool)]), "The encrypted volume (R2): `size_gb` and `encrypted` (always `true`).")
        .computed("data_controller", object(&[("entity_name", T::String), ("admin_email", T::String)]), "The data controller named in the privacy notice (R19): `entity_name` and `admin_email`.")
        .computed("status", T::String, "Lifecycle status: `provisioning`, `running`, `updating`, `blocked`, `deleting` or `failed`.")
        .computed("status_reason", T::String, "Why the homeserver is `failed` or `blocked`, when it is.")
        .computed("client_url", T::String, "Matrix client API base URL, once the homeserver runs.")
        .computed("privacy_notice_url", T::String, "Where the privacy notice is published (R19).")
        .computed("terms_version", T::String, "Customer terms version accepted for the homeserver (R20).")
        .computed("terms_accepted_at", T::String, "When those terms were accepted (RFC 3339, R20).")
        .computed("created_at", T::String, "When the homeserver was created (RFC 3339).")
        .schema()
}

#[async_trait]
impl DataSource for HomeserverDataSource {
    type State<'a> = HomeserverDataState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(homeserver_schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        match (&config.id, &config.name) {
            (Value::Null, Value::Null) => diag::root_error(diags, "Missing homeserver selector", "Give exactly one of `name` or `id`."),
            (Value::Value(_), Value::Value(_)) => {
                diag::invalid(diags, "name", "give exactly one of `name` or `id`, not both")
            }
            _ => {}
        }
        if let Value::Value(n) = &config.name {
            if let Err(e) = HomeserverName::parse(n) {
                diag::invalid(diags, "name", e.message);
            }
        }
        Some(())
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<Self::State<'a>> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let (found, what) = match (&config.id, &config.name) {
                (Value::Value(id), _) => (client.get_opt::<Homeserver>(&format!("/v1/homeservers/{}", seg(id))).await, format!("id `{id}`")),
                (_, Value::Value(name)) => (
                    client
                        .list_all::<Homeserver>(&format!("/v1/homeservers?name={}", escape(name)))
                        .await
                        .map(|items| items.into_iter().find(|h| h.name.as_str() == name)),
                    format!("name `{name}`"),
                ),
                _ => {
                    diag::root_error(diags, "Missing homeserver selector", "Give exactly one of `name` or `id`.");
                    return None;
                }
            };
            match found {
                Ok(Some(h)) => Some(from_api(&h, &HomeserverDataState::default())),
                Ok(None) => {
                    diag::root_error(diags, "Homeserver not found", format!("No homeserver with {what} exists in this organization."));
                    None
                }
                Err(e) => {
                    diag::api_error(diags, "Cannot read homeserver", &e, &[]);
                    None
                }
            }
        })
    }
}

// ------------------------------------------------------------------ backups ---------------

pub struct BackupsDataSource {
    pub ctx: Arc<Ctx>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupItem {
    pub id: VS,
    pub status: VS,
    pub kind: VS,
    pub started_at: VS,
    pub finished_at: VS,
    pub size_bytes: VN,
    pub expires_at: VS,
    pub error: VS,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupsState {
    pub homeserver_id: VS,
    pub backups: Value<Vec<BackupItem>>,
}

pub const BACKUP_FIELDS: FieldDocs = &[
    ("id", "The backup's id."),
    ("status", "`running` (queued or being written), `completed` or `failed`. Only completed backups can be restored."),
    ("kind", "`scheduled` (the policy's daily backup, R4) or `on_demand`."),
    ("started_at", "When the backup started (RFC 3339)."),
    ("finished_at", "When it finished (RFC 3339), if it has."),
    ("size_bytes", "Size of the encrypted archive in bytes, once completed."),
    ("expires_at", "When retention deletes it (RFC 3339, R4)."),
    ("error", "Why it failed, if it did."),
];

pub fn backups_schema() -> Schema {
    BlockBuilder::new("The encrypted backups of a homeserver (R4), oldest first. Backups outlive a deleted homeserver until they expire.")
        .required("homeserver_id", T::String, "Id of the homeserver.")
        .computed(
            "backups",
            list_of(object(&[
                ("id", T::String),
                ("status", T::String),
                ("kind", T::String),
                ("started_at", T::String),
                ("finished_at", T::String),
                ("size_bytes", T::Number),
                ("expires_at", T::String),
                ("error", T::String),
            ])),
            "The backups.",
        )
        .schema()
}

#[async_trait]
impl DataSource for BackupsDataSource {
    type State<'a> = BackupsState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(backups_schema())
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<Self::State<'a>> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let Value::Value(hs) = &config.homeserver_id else {
                diag::invalid(diags, "homeserver_id", "a homeserver id is required");
                return None;
            };
            match client.list_all::<Backup>(&format!("/v1/homeservers/{}/backups", seg(hs))).await {
                Ok(items) => {
                    let mut items = items;
                    items.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
                    let backups = items
                        .into_iter()
                        .map(|b| BackupItem {
                            id: s(b.id),
                            status: s(match b.status {
                                matrixhost_api::BackupStatus::Running => "running",
                                matrixhost_api::BackupStatus::Completed => "completed",
                                matrixhost_api::BackupStatus::Failed => "failed",
                            }),
                            kind: match serde_json::to_value(b.kind) {
                                Ok(serde_json::Value::String(k)) => s(k),
                                _ => Value::Null,
                            },
                            started_at: s(ts(b.started_at)),
                            finished_at: opt_ts(b.finished_at),
                            size_bytes: match b.size_bytes {
                                Some(n) => Value::Value(Num::int(n)),
                                None => Value::Null,
                            },
                            expires_at: s(ts(b.expires_at)),
                            error: opt_s(b.error),
                        })
                        .collect();
                    Some(BackupsState { homeserver_id: config.homeserver_id.clone(), backups: Value::Value(backups) })
                }
                Err(e) if e.is_not_found() => {
                    diag::error(diags, diag::path("homeserver_id"), "Homeserver not found", format!("No homeserver `{hs}` exists in this organization."));
                    None
                }
                Err(e) => {
                    diag::api_error(diags, "Cannot read backups", &e, &[]);
                    None
                }
            }
        })
    }
}
