//! `matrixhost_homeserver`: a hosted Matrix homeserver (R1, R2, R9, R19, R20, R22).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use matrixhost_api::{
    BillingPlan, BillingStatus, DataController, Email, EmailDomain, Encrypted, EntityName, Homeserver, HomeserverCreate, HomeserverName,
    HomeserverSettings, HomeserverStatus, RegionCode, Registration, RegistrationPolicy, ServerName, Volume,
    VolumeSizeGb,
};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{NestedBlock, Schema};
use tf_provider::Diagnostics;

use super::managed::{ApiResource, Planned, Write};
use super::{check_bool, check_int, check_str, differs, known, poll_interval, seg, ts, unknown};
use crate::client::{escape, ApiFailure, Client};
use crate::diag;
use crate::duration;
use crate::provider::Ctx;
use crate::schema_builder::{set_of_strings, timeouts_block, BlockBuilder, T};
use crate::values::{
    keep_equivalent, keep_equivalent_set, opt_s, or_default, s, set_items, set_known, set_of, Num, Value, VB, VN, VS,
    VSet,
};

pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub struct HomeserverResource;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeBlock {
    pub size_gb: VN,
    pub encrypted: VB,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataControllerBlock {
    pub entity_name: VS,
    pub admin_email: VS,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutsBlock {
    pub create: VS,
    pub update: VS,
    pub delete: VS,
}

/// The resource's `timeouts` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeouts(#[serde(with = "crate::values::single_block")] pub Value<TimeoutsBlock>);

/// The `matrixhost_homeserver` data source has no `timeouts`: it leaves the field out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoTimeouts;

pub trait TimeoutsField {
    fn absent(&self) -> bool;
}

impl TimeoutsField for Timeouts {
    fn absent(&self) -> bool {
        false
    }
}

impl TimeoutsField for NoTimeouts {
    fn absent(&self) -> bool {
        true
    }
}

/// A homeserver's state, for the resource and (with [`NoTimeouts`]) for the data source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, bound(serialize = "Ts: Serialize + TimeoutsField", deserialize = "Ts: Deserialize<'de> + Default"))]
pub struct HomeserverState<Ts = Timeouts> {
    pub id: VS,
    pub name: VS,
    pub region: VS,
    pub billing_plan_id: VS,
    pub server_name: VS,
    pub federation_enabled: VB,
    pub registration: VS,
    pub allowed_email_domains: VSet,
    pub guest_access: VB,
    pub encryption_by_default: VB,
    pub deletion_protection: VB,
    pub volume: Value<VolumeBlock>,
    pub data_controller: Value<DataControllerBlock>,
    #[serde(skip_serializing_if = "TimeoutsField::absent")]
    pub timeouts: Ts,
    pub status: VS,
    pub status_reason: VS,
    pub client_url: VS,
    pub privacy_notice_url: VS,
    pub terms_version: VS,
    pub terms_accepted_at: VS,
    pub created_at: VS,
}


fn norm_email(s: &str) -> Option<String> {
    Email::parse(s).ok().map(|e| e.to_string())
}
fn norm_domain(s: &str) -> Option<String> {
    EmailDomain::parse(s).ok().map(|e| e.to_string())
}
fn norm_entity(s: &str) -> Option<String> {
    EntityName::parse(s).ok().map(|e| e.to_string())
}


/// The inputs as they will be applied: configuration, defaults, and — where the configuration
/// says the same thing as `reference` in another spelling — the reference's spelling.
fn inputs(config: &HomeserverState, reference: &HomeserverState) -> HomeserverState {
    let volume = match &config.volume {
        Value::Value(v) => Value::Value(VolumeBlock { size_gb: v.size_gb, encrypted: or_default(&v.encrypted, true) }),
        other => other.clone(),
    };
    let ref_dc = reference.data_controller.as_ref_option().cloned().unwrap_or_default();
    let data_controller = match &config.data_controller {
        Value::Value(dc) => Value::Value(DataControllerBlock {
            entity_name: keep_equivalent(&ref_dc.entity_name, dc.entity_name.clone(), norm_entity),
            admin_email: keep_equivalent(&ref_dc.admin_email, dc.admin_email.clone(), norm_email),
        }),
        other => other.clone(),
    };
    let domains = match &config.allowed_email_domains {
        Value::Null => set_of([]),
        other => other.clone(),
    };
    HomeserverState {
        name: config.name.clone(),
        region: config.region.clone(),
        billing_plan_id: config.billing_plan_id.clone(),
        server_name: config.server_name.clone(),
        federation_enabled: or_default(&config.federation_enabled, true),
        registration: or_default(&config.registration, Registration::default().as_str().to_owned()),
        allowed_email_domains: keep_equivalent_set(&reference.allowed_email_domains, domains, norm_domain),
        guest_access: or_default(&config.guest_access, false),
        encryption_by_default: or_default(&config.encryption_by_default, true),
        deletion_protection: or_default(&config.deletion_protection, false),
        volume,
        data_controller,
        timeouts: config.timeouts.clone(),
        ..Default::default()
    }
}

/// The settings a `PUT` carries, compared to decide whether there is anything to send.
fn same_settings(a: &HomeserverState, b: &HomeserverState) -> bool {
    a.federation_enabled == b.federation_enabled
        && a.registration == b.registration
        && same_set(&a.allowed_email_domains, &b.allowed_email_domains)
        && a.guest_access == b.guest_access
        && a.encryption_by_default == b.encryption_by_default
        && a.deletion_protection == b.deletion_protection
        && a.volume == b.volume
        && a.data_controller == b.data_controller
}

fn same_set(a: &VSet, b: &VSet) -> bool {
    if !set_known(a) || !set_known(b) {
        return false;
    }
    let mut x = set_items(a);
    let mut y = set_items(b);
    x.sort();
    y.sort();
    x == y
}

fn timeout(t: &Value<TimeoutsBlock>, op: &str, default: Duration) -> Duration {
    let v = match t.as_ref_option() {
        Some(t) => match op {
            "create" => t.create.clone(),
            "update" => t.update.clone(),
            _ => t.delete.clone(),
        },
        None => Value::Null,
    };
    v.as_ref_option().and_then(|s| duration::parse(s).ok()).unwrap_or(default)
}

fn parse_field<T>(diags: &mut Diagnostics, attr: &str, v: &VS, parse: impl Fn(&str) -> Result<T, matrixhost_api::RuleError>) -> Option<T> {
    let text = known(diags, attr, v)?;
    check_str(diags, attr, &Value::Value(text), parse)
}

/// The settings body from planned (known) inputs, each value through its domain parser.
fn settings(diags: &mut Diagnostics, p: &HomeserverState) -> Option<HomeserverSettings> {
    let before = diags.errors.len();
    let federation_enabled = known(diags, "federation_enabled", &p.federation_enabled);
    let registration = parse_field(diags, "registration", &p.registration, Registration::parse);
    let mut domains = Vec::new();
    if !set_known(&p.allowed_email_domains) {
        diag::invalid(diags, "allowed_email_domains", "the value is still unknown at apply time");
    }
    for d in set_items(&p.allowed_email_domains) {
        match EmailDomain::parse(&d) {
            Ok(d) => domains.push(d),
            Err(e) => diag::invalid(diags, "allowed_email_domains", e.message),
        }
    }
    if let Some(mode) = registration {
        if let Err(e) = RegistrationPolicy::new(mode, domains.clone()) {
            let attr = if domains.is_empty() { "registration" } else { "allowed_email_domains" };
            diag::invalid(diags, attr, e.message);
        }
    }
    let guest_access = known(diags, "guest_access", &p.guest_access);
    let encryption_by_default = known(diags, "encryption_by_default", &p.encryption_by_default);
    let deletion_protection = known(diags, "deletion_protection", &p.deletion_protection);
    let volume = known(diags, "volume", &p.volume).and_then(|v| {
        let size = known(diags, "volume.size_gb", &v.size_gb)
            .and_then(|n| check_int(diags, "volume.size_gb", &Value::Value(n), VolumeSizeGb::parse));
        let enc = known(diags, "volume.encrypted", &v.encrypted)
            .and_then(|b| check_bool(diags, "volume.encrypted", &Value::Value(b), Encrypted::parse));
        Some(Volume { size_gb: size?, encrypted: enc? })
    });
    let data_controller = known(diags, "data_controller", &p.data_controller).and_then(|dc| {
        let entity = parse_field(diags, "data_controller.entity_name", &dc.entity_name, EntityName::parse);
        let email = parse_field(diags, "data_controller.admin_email", &dc.admin_email, Email::parse);
        Some(DataController { entity_name: entity?, admin_email: email? })
    });
    if diags.errors.len() > before {
        return None;
    }
    Some(HomeserverSettings {
        federation_enabled: federation_enabled?,
        registration: registration?,
        allowed_email_domains: domains,
        guest_access: guest_access?,
        encryption_by_default: encryption_by_default?,
        deletion_protection: deletion_protection?,
        volume: volume?,
        data_controller: data_controller?,
    })
}


/// The state for a homeserver as the API shows it. Where `reference` (the planned or prior
/// state) spells a normalised value differently but equivalently (email case, domain case and
/// order, surrounding spaces), its spelling is kept, so nothing diffs on normalisation alone.
pub fn from_api<Ts: Clone>(hs: &Homeserver, reference: &HomeserverState<Ts>) -> HomeserverState<Ts> {
    let ref_dc = reference.data_controller.as_ref_option().cloned().unwrap_or_default();
    let domains = set_of(hs.allowed_email_domains.iter().map(|d| d.to_string()));
    HomeserverState {
        id: s(&hs.id),
        name: s(hs.name.as_str()),
        region: s(hs.region.as_str()),
        billing_plan_id: s(&hs.billing_plan_id),
        server_name: s(hs.server_name.as_str()),
        federation_enabled: Value::Value(hs.federation_enabled),
        registration: s(hs.registration.as_str()),
        allowed_email_domains: keep_equivalent_set(&reference.allowed_email_domains, domains, norm_domain),
        guest_access: Value::Value(hs.guest_access),
        encryption_by_default: Value::Value(hs.encryption_by_default),
        deletion_protection: Value::Value(hs.deletion_protection),
        volume: Value::Value(VolumeBlock {
            size_gb: Value::Value(Num::int(i64::from(hs.volume.size_gb.get()))),
            encrypted: Value::Value(bool::from(hs.volume.encrypted)),
        }),
        data_controller: Value::Value(DataControllerBlock {
            entity_name: keep_equivalent(&ref_dc.entity_name, s(hs.data_controller.entity_name.as_str()), norm_entity),
            admin_email: keep_equivalent(&ref_dc.admin_email, s(hs.data_controller.admin_email.as_str()), norm_email),
        }),
        timeouts: reference.timeouts.clone(),
        status: s(hs.status.as_str()),
        status_reason: opt_s(hs.status_reason.as_ref()),
        client_url: opt_s(hs.client_url.as_ref()),
        privacy_notice_url: opt_s(hs.privacy_notice_url.as_ref()),
        terms_version: s(&hs.terms_version),
        terms_accepted_at: s(ts(hs.terms_accepted_at)),
        created_at: s(ts(hs.created_at)),
    }
}

fn item_path(id: &str) -> String {
    format!("/v1/homeservers/{}", seg(id))
}

/// How a wait for `running` ended.
enum Waited {
    Running(Homeserver),
    /// Blocked for a reason outside this resource (billing, operator): settings are applied.
    Blocked(Homeserver),
    Failed(Homeserver),
    TimedOut(Homeserver),
    Gone,
    Error(ApiFailure, Homeserver),
}

/// Polls until the homeserver is `running` (or `failed`, `blocked`, gone), within `limit`.
/// `settle`: right after an update the runtime may not have picked the change up yet and the
/// homeserver still shows `running`; for this long a `running` is not trusted unless the
/// homeserver went through another status first.
async fn wait_running(client: &Client, mut hs: Homeserver, limit: Duration, settle: Duration) -> Waited {
    let started = Instant::now();
    let mut seen_other = hs.status != HomeserverStatus::Running;
    loop {
        match hs.status {
            HomeserverStatus::Running if seen_other || started.elapsed() >= settle => return Waited::Running(hs),
            HomeserverStatus::Failed => return Waited::Failed(hs),
            HomeserverStatus::Blocked if seen_other || started.elapsed() >= settle => return Waited::Blocked(hs),
            HomeserverStatus::Deleting => return Waited::Gone,
            HomeserverStatus::Running | HomeserverStatus::Blocked => {}
            _ => seen_other = true,
        }
        if started.elapsed() >= limit {
            return Waited::TimedOut(hs);
        }
        let pause = if started.elapsed() < settle { Duration::from_millis(250) } else { poll_interval(started.elapsed()) };
        tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()).max(Duration::from_millis(50)))).await;
        match client.get_opt::<Homeserver>(&item_path(&hs.id)).await {
            Ok(Some(next)) => hs = next,
            Ok(None) => return Waited::Gone,
            Err(e) => return Waited::Error(e, hs),
        }
    }
}

/// R1 with the catalog: the region must be available.
async fn check_region_available(ctx: &Ctx, diags: &mut Diagnostics, region: &VS) {
    let Value::Value(code) = region else { return };
    let Ok(code) = RegionCode::parse(code) else { return };
    if let Some(catalog) = ctx.catalog().await {
        if let Err(e) = catalog.available_region(&code) {
            diag::invalid(diags, "region", e.message);
        }
    }
}

/// Waits for `running` after a create or update; the outcome becomes diagnostics. The
/// homeserver exists whatever happens, so it is returned unless it disappeared.
async fn finish(diags: &mut Diagnostics, client: &Client, hs: Homeserver, limit: Duration, settle: Duration, write: Write) -> Option<Homeserver> {
    let name = hs.name.to_string();
    let what = write.as_str();
    let reason = |h: &Homeserver| h.status_reason.clone().unwrap_or_else(|| "no reason given".into());
    match wait_running(client, hs, limit, settle).await {
        Waited::Running(h) => Some(h),
        Waited::Blocked(h) => {
            // R12: an unpaid billing plan is the customer's to fix, and nothing works until
            // then: an error. Other blocks (a full volume, the operator) say why and let the
            // apply finish.
            let plan: Option<BillingPlan> = client.get(&format!("/v1/billing-plans/{}", seg(&h.billing_plan_id))).await.ok();
            match plan {
                Some(plan) if plan.status == BillingStatus::PastDue => diag::root_error(
                    diags,
                    format!("Homeserver `{name}` is blocked: a payment failed"),
                    format!(
                        "The {what} was applied, but the last payment for billing plan {} failed, so the homeserver is blocked for all users until it is paid (R12). {}; the homeserver unblocks within a minute, then apply again.",
                        plan.id,
                        super::billing_plan::how_to_pay(client)
                    ),
                ),
                _ => diag::root_warning(diags, format!("Homeserver `{name}` is blocked"), format!("The {what} was applied, but the homeserver is blocked for all users: {}", reason(&h))),
            }
            Some(h)
        }
        Waited::Failed(h) => {
            diag::root_error(diags, format!("Homeserver `{name}` failed"), format!("The homeserver did not start: {}", reason(&h)));
            Some(h)
        }
        Waited::TimedOut(h) => {
            let why = h.status_reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
            diag::root_error(
                diags,
                format!("Timed out waiting for homeserver `{name}`"),
                format!(
                    "The homeserver was not `running` within {} after the {what}; it is `{}`{why}. Raise `timeouts.{what}` if it needs longer.",
                    duration::show(limit),
                    h.status.as_str(),
                ),
            );
            Some(h)
        }
        Waited::Gone => {
            diag::root_error(diags, format!("Homeserver `{name}` disappeared"), format!("The homeserver was deleted while waiting for the {what} to finish."));
            None
        }
        Waited::Error(e, h) => {
            diag::api_error(diags, format!("Cannot check homeserver `{name}` after the {what}"), &e, HomeserverResource::FIELDS);
            Some(h)
        }
    }
}

/// After a `202` to a delete the runtime tears the homeserver down; it is gone when reads
/// answer 404.
async fn wait_gone(diags: &mut Diagnostics, client: &Client, prior: &HomeserverState, id: &str) -> Option<()> {
    let name = prior.name.as_ref_option().cloned().unwrap_or_else(|| id.to_owned());
    let limit = timeout(&prior.timeouts.0, "delete", DEFAULT_DELETE_TIMEOUT);
    let started = Instant::now();
    loop {
        tokio::time::sleep(poll_interval(started.elapsed())).await;
        match client.get_opt::<Homeserver>(&item_path(id)).await {
            Ok(None) => return Some(()),
            Ok(Some(hs)) if hs.status == HomeserverStatus::Failed => {
                diag::root_error(
                    diags,
                    format!("Cannot delete homeserver `{name}`"),
                    format!("The deletion failed: {}", hs.status_reason.unwrap_or_else(|| "no reason given".into())),
                );
                return None;
            }
            Ok(Some(hs)) if started.elapsed() >= limit => {
                diag::root_error(
                    diags,
                    format!("Timed out deleting homeserver `{name}`"),
                    format!(
                        "The homeserver was still `{}` {} after the delete{}. Raise `timeouts.delete` if it needs longer.",
                        hs.status.as_str(),
                        duration::show(limit),
                        hs.status_reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                );
                return None;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                diag::api_error(diags, format!("Cannot check homeserver `{name}` while deleting it"), &e, HomeserverResource::FIELDS);
                return None;
            }
        }
    }
}

/// Whether a change reaches the homeserver's process (everything but deletion protection).
fn runtime_relevant(a: &HomeserverState, b: &HomeserverState) -> bool {
    let mut x = a.clone();
    x.deletion_protection = b.deletion_protection;
    !same_settings(&x, b)
}

#[async_trait]
impl ApiResource for HomeserverResource {
    type State = HomeserverState;
    type Object = Homeserver;
    type CreateBody = HomeserverCreate;
    type UpdateBody = HomeserverSettings;

    const TYPE: &'static str = "matrixhost_homeserver";
    const NOUN: &'static str = "homeserver";
    const FIELDS: &'static [&'static str] = &[
        "name",
        "region",
        "billing_plan_id",
        "server_name",
        "federation_enabled",
        "registration",
        "allowed_email_domains",
        "guest_access",
        "encryption_by_default",
        "deletion_protection",
        "volume",
        "data_controller",
    ];

    fn schema() -> Schema {
        let volume = BlockBuilder::new("The homeserver's encrypted volume (R2).")
            .required("size_gb", T::Number, "Size in GB, at most the plan's storage limit. Volumes only grow: a smaller size is refused.")
            .optional_computed("encrypted", T::Bool, "Always `true` (R2): every customer-data volume is encrypted at rest, and `false` is refused at plan time. Defaults to `true`.")
            .build();
        let controller = BlockBuilder::new("The customer as data controller, named in the homeserver's privacy notice (R19).")
            .required("entity_name", T::String, "Legal name of the customer entity (1-200 characters).")
            .required("admin_email", T::String, "Contact email of the customer's administrator. Compared case-insensitively.")
            .build();
        BlockBuilder::new(
            "A hosted Matrix homeserver: its own Synapse process, data directory, encrypted volume, port and credentials (R3), in a US region (R1). Create and update wait until the homeserver is `running`; destroy waits until it is gone.",
        )
        .computed("id", T::String, "The homeserver's id (`hs_...`).")
        .required("name", T::String, "Name, unique in the organization: a lower-case DNS label (a-z, 0-9, `-`), starting with a letter. Changing it forces a new homeserver.")
        .required("region", T::String, "Region code, e.g. `us-east-1` (see the `matrixhost_regions` data source). R1: only available US regions are accepted. Changing it forces a new homeserver.")
        .required("billing_plan_id", T::String, "Id of the `matrixhost_billing_plan` paying for this homeserver; each homeserver needs its own. Changing it forces a new homeserver.")
        .optional_computed("server_name", T::String, "Matrix server name (the part after `:` in user ids), a lower-case DNS name such as `chat.example.com`. Defaults to `<name>.<organization>.<platform domain>`. Changing it forces a new homeserver.")
        .optional_computed("federation_enabled", T::Bool, "Federation with the rest of the Matrix network (R9). Defaults to `true`.")
        .optional_computed("registration", T::String, "Who may register (R9): `invite_only`, `open`, or `email_domains` (only addresses in `allowed_email_domains`). Defaults to `invite_only`.")
        .optional_computed("allowed_email_domains", set_of_strings(), "With `registration = \"email_domains\"`: the whitelisted email domains, e.g. `[\"mycompany.com\"]` (R9). Required with `email_domains`, refused otherwise. Compared case-insensitively. Defaults to an empty set.")
        .optional_computed("guest_access", T::Bool, "Read-only guest access (R9). Defaults to `false`.")
        .optional_computed("encryption_by_default", T::Bool, "End-to-end encryption on by default for new rooms. Only plans that allow it can turn it off (R22). Defaults to `true`.")
        .optional_computed("deletion_protection", T::Bool, "When `true`, destroying the homeserver fails with an error. Defaults to `false`.")
        .block("volume", NestedBlock::Single(volume))
        .block("data_controller", NestedBlock::Single(controller))
        .block(
            "timeouts",
            timeouts_block(&[
                ("create", "How long to wait for a new homeserver to be `running`. Defaults to `20m`."),
                ("update", "How long to wait for the homeserver to be `running` again after a change. Defaults to `20m`."),
                ("delete", "How long to wait for the homeserver to be gone. Defaults to `10m`."),
            ]),
        )
        .computed("status", T::String, "Lifecycle status: `provisioning`, `running`, `updating`, `blocked`, `deleting` or `failed`.")
        .computed("status_reason", T::String, "Why the homeserver is `failed` or `blocked`, when it is.")
        .computed("client_url", T::String, "Matrix client API base URL, once the homeserver runs.")
        .computed("privacy_notice_url", T::String, "Where the homeserver's privacy notice is published (R19), once it runs.")
        .computed("terms_version", T::String, "Version of the customer terms accepted when the homeserver was created (R20).")
        .computed("terms_accepted_at", T::String, "When those terms were accepted (RFC 3339, R20).")
        .computed("created_at", T::String, "When the homeserver was created (RFC 3339).")
        .schema()
    }

    /// Every rule on the inputs that needs no network. Unknown values (and sets with unknown
    /// elements) are skipped: they are checked at apply, once known.
    fn check(diags: &mut Diagnostics, c: &HomeserverState) {
        check_str(diags, "name", &c.name, HomeserverName::parse);
        // R1
        check_str(diags, "region", &c.region, RegionCode::parse);
        if let Value::Value(id) = &c.billing_plan_id {
            if id.trim().is_empty() {
                diag::invalid(diags, "billing_plan_id", "must be the id of a billing plan (bp_...)");
            }
        }
        check_str(diags, "server_name", &c.server_name, ServerName::parse);
        let mode = check_str(diags, "registration", &c.registration, Registration::parse);
        let mut domains_ok = true;
        let mut domains = Vec::new();
        for d in set_items(&c.allowed_email_domains) {
            match EmailDomain::parse(&d) {
                Ok(d) => domains.push(d),
                Err(e) => {
                    domains_ok = false;
                    diag::invalid(diags, "allowed_email_domains", e.message);
                }
            }
        }
        // R9: decided once both the mode and the whole set are known.
        let mode = match (&c.registration, mode) {
            (Value::Null, _) => Some(Registration::default()),
            (_, m) => m,
        };
        if let Some(mode) = mode {
            if domains_ok && set_known(&c.allowed_email_domains) {
                if let Err(e) = RegistrationPolicy::new(mode, domains.clone()) {
                    let attr = if domains.is_empty() { "registration" } else { "allowed_email_domains" };
                    diag::invalid(diags, attr, e.message);
                }
            }
        }
        if let Value::Value(v) = &c.volume {
            check_int(diags, "volume.size_gb", &v.size_gb, VolumeSizeGb::parse);
            // R2
            check_bool(diags, "volume.encrypted", &v.encrypted, Encrypted::parse);
        }
        if let Value::Value(dc) = &c.data_controller {
            check_str(diags, "data_controller.entity_name", &dc.entity_name, EntityName::parse);
            check_str(diags, "data_controller.admin_email", &dc.admin_email, Email::parse);
        }
        if let Value::Value(t) = &c.timeouts.0 {
            for (op, v) in [("create", &t.create), ("update", &t.update), ("delete", &t.delete)] {
                if let Value::Value(text) = v {
                    if let Err(e) = duration::parse(text) {
                        diag::invalid(diags, &format!("timeouts.0.{op}"), e);
                    }
                }
            }
        }
    }

    fn plan_new(config: &HomeserverState) -> HomeserverState {
        let mut planned = inputs(config, &HomeserverState::default());
        if planned.server_name.is_null() {
            planned.server_name = Value::Unknown;
        }
        for v in [&mut planned.id, &mut planned.terms_version, &mut planned.terms_accepted_at, &mut planned.created_at] {
            unknown(v);
        }
        unknown_runtime(&mut planned);
        planned
    }

    fn plan_change(diags: &mut Diagnostics, prior: &HomeserverState, config: &HomeserverState) -> Planned<HomeserverState> {
        let wanted = inputs(config, prior);
        let mut planned = HomeserverState {
            // Optional and computed: left out, the server's value stays (no replacement).
            server_name: if config.server_name.is_null() { prior.server_name.clone() } else { config.server_name.clone() },
            ..wanted
        };
        for (v, p) in [
            (&mut planned.id, &prior.id),
            (&mut planned.status, &prior.status),
            (&mut planned.status_reason, &prior.status_reason),
            (&mut planned.client_url, &prior.client_url),
            (&mut planned.privacy_notice_url, &prior.privacy_notice_url),
            (&mut planned.terms_version, &prior.terms_version),
            (&mut planned.terms_accepted_at, &prior.terms_accepted_at),
            (&mut planned.created_at, &prior.created_at),
        ] {
            *v = p.clone();
        }
        let replace: Vec<&'static str> = [
            ("name", differs(&planned.name, &prior.name)),
            ("region", differs(&planned.region, &prior.region)),
            ("billing_plan_id", differs(&planned.billing_plan_id, &prior.billing_plan_id)),
            ("server_name", differs(&planned.server_name, &prior.server_name)),
        ]
        .into_iter()
        .filter_map(|(attr, changed)| changed.then_some(attr))
        .collect();
        if replace.is_empty() {
            // Volumes only grow; shrinking is refused now rather than at apply.
            let size = |v: &Value<VolumeBlock>| v.as_ref_option().and_then(|v| v.size_gb.as_ref_option().and_then(|n| n.as_i64()));
            if let (Some(new), Some(old)) = (size(&planned.volume), size(&prior.volume)) {
                if new < old {
                    diag::invalid(diags, "volume.size_gb", format!("volumes only grow: {new} GB is smaller than the current {old} GB"));
                }
            }
        }
        if !same_settings(&planned, prior) || !replace.is_empty() {
            unknown_runtime(&mut planned);
        }
        if !replace.is_empty() {
            for v in [&mut planned.id, &mut planned.terms_version, &mut planned.terms_accepted_at, &mut planned.created_at] {
                unknown(v);
            }
            if config.server_name.is_null() {
                planned.server_name = Value::Unknown;
            }
        }
        Planned { state: planned, replace }
    }

    async fn check_catalog(ctx: &Ctx, diags: &mut Diagnostics, planned: &HomeserverState, prior: Option<&HomeserverState>) {
        if prior.is_none_or(|prior| differs(&planned.region, &prior.region)) {
            check_region_available(ctx, diags, &planned.region).await;
        }
    }

    fn protected(prior: &HomeserverState) -> Option<String> {
        (prior.deletion_protection == Value::Value(true)).then(|| prior.name.as_ref_option().cloned().unwrap_or_default())
    }

    fn create_path(_diags: &mut Diagnostics, _planned: &HomeserverState) -> Option<String> {
        Some("/v1/homeservers".to_owned())
    }

    fn item_path(state: &HomeserverState) -> Option<String> {
        state.id.as_ref_option().map(|id| item_path(id))
    }

    fn version(hs: &Homeserver) -> i64 {
        hs.version
    }

    fn to_state(hs: &Homeserver, reference: &HomeserverState) -> HomeserverState {
        from_api(hs, reference)
    }

    fn create_body(diags: &mut Diagnostics, p: &HomeserverState) -> Option<HomeserverCreate> {
        let name = parse_field(diags, "name", &p.name, HomeserverName::parse);
        let region = parse_field(diags, "region", &p.region, RegionCode::parse);
        let billing_plan_id = known(diags, "billing_plan_id", &p.billing_plan_id);
        let server_name = match &p.server_name {
            Value::Value(v) => check_str(diags, "server_name", &s(v.clone()), ServerName::parse).map(Some),
            _ => Some(None),
        };
        let settings = settings(diags, p);
        let settings = settings?;
        Some(HomeserverCreate {
            name: name?,
            region: region?,
            billing_plan_id: billing_plan_id?,
            server_name: server_name?,
            federation_enabled: settings.federation_enabled,
            registration: settings.registration,
            allowed_email_domains: settings.allowed_email_domains,
            guest_access: settings.guest_access,
            encryption_by_default: settings.encryption_by_default,
            deletion_protection: settings.deletion_protection,
            volume: settings.volume,
            data_controller: settings.data_controller,
        })
    }

    fn update_body(diags: &mut Diagnostics, planned: &HomeserverState) -> Option<HomeserverSettings> {
        settings(diags, planned)
    }

    /// Only `timeouts` changed: nothing to send.
    fn sends_update(prior: &HomeserverState, planned: &HomeserverState) -> bool {
        !same_settings(planned, prior)
    }

    /// Being deleted (out of band) counts as gone: it is planned again.
    fn going(hs: &Homeserver) -> bool {
        hs.status == HomeserverStatus::Deleting
    }

    async fn settle(client: &Client, diags: &mut Diagnostics, write: Write, hs: Homeserver, prior: Option<&HomeserverState>, planned: &HomeserverState) -> Option<Homeserver> {
        let (limit, settle) = match (write, prior) {
            (Write::Update, Some(prior)) => {
                // Only a change the homeserver's process sees makes it restart; give the runtime
                // a moment to pick the change up before trusting `running`.
                let settle = if runtime_relevant(planned, prior) { Duration::from_secs(3) } else { Duration::ZERO };
                (timeout(&planned.timeouts.0, "update", DEFAULT_UPDATE_TIMEOUT), settle)
            }
            _ => (timeout(&planned.timeouts.0, "create", DEFAULT_CREATE_TIMEOUT), Duration::ZERO),
        };
        finish(diags, client, hs, limit, settle, write).await
    }

    async fn settle_delete(client: &Client, diags: &mut Diagnostics, prior: &HomeserverState, status: u16) -> Option<()> {
        match (status, &prior.id) {
            (202, Value::Value(id)) => wait_gone(diags, client, prior, id).await,
            _ => Some(()),
        }
    }

    /// By id, or by name: ids contain `_` (hs_...), which a name cannot.
    async fn lookup(client: &Client, id: &str) -> Result<Result<Option<Homeserver>, ApiFailure>, String> {
        if id.contains('_') {
            return Ok(client.get_opt(&item_path(id)).await);
        }
        let name = HomeserverName::parse(id).map_err(|e| format!("`{id}` is neither a homeserver id (hs_...) nor a name: {}", e.message))?;
        let listed = client.list_all::<Homeserver>(&format!("/v1/homeservers?name={}", escape(name.as_str()))).await;
        Ok(listed.map(|items| items.into_iter().find(|h| h.name == name)))
    }
}

/// Marks unknown what the runtime decides: status and the URLs it publishes.
fn unknown_runtime(planned: &mut HomeserverState) {
    for v in [&mut planned.status, &mut planned.status_reason, &mut planned.client_url, &mut planned.privacy_notice_url] {
        unknown(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HomeserverState {
        HomeserverState {
            name: s("staff"),
            region: s("us-east-1"),
            billing_plan_id: s("bp_1"),
            volume: Value::Value(VolumeBlock { size_gb: Value::Value(Num::int(10)), encrypted: Value::Null }),
            data_controller: Value::Value(DataControllerBlock { entity_name: s("Acme"), admin_email: s("IT@Acme.example") }),
            ..Default::default()
        }
    }

    fn errors(c: &HomeserverState) -> Vec<String> {
        let mut d = Diagnostics::default();
        HomeserverResource::check(&mut d, c);
        d.errors.iter().map(|e| format!("{} | {} | {}", e.attribute, e.summary, e.detail)).collect()
    }

    #[test]
    fn plan_time_rules() {
        assert!(errors(&base()).is_empty(), "{:?}", errors(&base()));
        let mut c = base();
        c.region = s("eu-west-1");
        let e = errors(&c);
        assert!(e.len() == 1 && e[0].starts_with("region |") && e[0].contains("R1"), "{e:?}");
        let mut c = base();
        c.volume = Value::Value(VolumeBlock { size_gb: Value::Value(Num::int(10)), encrypted: Value::Value(false) });
        let e = errors(&c);
        assert!(e.len() == 1 && e[0].starts_with("volume.encrypted |") && e[0].contains("R2"), "{e:?}");
        let mut c = base();
        c.registration = s("email_domains");
        let e = errors(&c);
        assert!(e.len() == 1 && e[0].starts_with("registration |") && e[0].contains("R9"), "{e:?}");
        c.allowed_email_domains = set_of(["Corp.example".to_owned()]);
        assert!(errors(&c).is_empty());
        c.allowed_email_domains = Value::Unknown;
        assert!(errors(&c).is_empty(), "unknown is never invalid");
        let mut c = base();
        c.timeouts = Timeouts(Value::Value(TimeoutsBlock { create: s("ten minutes"), ..Default::default() }));
        let e = errors(&c);
        assert!(e.len() == 1 && e[0].starts_with("timeouts[0].create |"), "{e:?}");
    }

    #[test]
    fn normalised_values_do_not_diff() {
        let mut config = base();
        config.registration = s("email_domains");
        config.allowed_email_domains = set_of(["B.example".to_owned(), "a.example".to_owned()]);
        let mut prior = inputs(&config, &HomeserverState::default());
        prior.allowed_email_domains = set_of(["a.example".to_owned(), "b.example".to_owned()]);
        if let Value::Value(dc) = &mut prior.data_controller {
            dc.admin_email = s("it@acme.example");
        }
        let planned = inputs(&config, &prior);
        assert_eq!(planned.allowed_email_domains, prior.allowed_email_domains);
        assert_eq!(planned.data_controller, prior.data_controller);
        assert!(same_settings(&planned, &prior));
    }
}
