//! `matrixhost_homeserver`: a hosted Matrix homeserver (R1, R2, R9, R19, R20, R22).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use matrixhost_api::{
    ErrorCode,
    DataController, Email, EmailDomain, Encrypted, EntityName, Homeserver, HomeserverCreate, HomeserverName,
    HomeserverSettings, HomeserverStatus, RegionCode, Registration, RegistrationPolicy, ServerName, Volume,
    VolumeSizeGb,
};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{NestedBlock, Schema};
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{
    check_bool, check_int, check_str, differs, import_not_found, known, poll_interval, private, seg, ts, unknown,
    version_of, PrivateState,
};
use crate::client::{escape, idempotency_key, ApiFailure, Client};
use crate::diag;
use crate::duration;
use crate::guarded;
use crate::provider::Ctx;
use crate::schema_builder::{set_of_strings, timeouts_block, BlockBuilder, T};
use crate::values::{
    keep_equivalent, keep_equivalent_set, opt_s, or_default, s, set_items, set_known, set_of, Num, Value, VB, VN, VS,
    VSet,
};

pub const TYPE: &str = "matrixhost_homeserver";
const FIELDS: &[&str] = &[
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

pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub struct HomeserverResource {
    pub ctx: Arc<Ctx>,
}

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HomeserverState {
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
    #[serde(with = "crate::values::single_block")]
    pub timeouts: Value<TimeoutsBlock>,
    pub status: VS,
    pub status_reason: VS,
    pub client_url: VS,
    pub privacy_notice_url: VS,
    pub terms_version: VS,
    pub terms_accepted_at: VS,
    pub created_at: VS,
}

pub fn schema() -> Schema {
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

fn norm_email(s: &str) -> Option<String> {
    Email::parse(s).ok().map(|e| e.to_string())
}
fn norm_domain(s: &str) -> Option<String> {
    EmailDomain::parse(s).ok().map(|e| e.to_string())
}
fn norm_entity(s: &str) -> Option<String> {
    EntityName::parse(s).ok().map(|e| e.to_string())
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
    if let Value::Value(t) = &c.timeouts {
        for (op, v) in [("create", &t.create), ("update", &t.update), ("delete", &t.delete)] {
            if let Value::Value(text) = v {
                if let Err(e) = duration::parse(text) {
                    diag::invalid(diags, &format!("timeouts.0.{op}"), e);
                }
            }
        }
    }
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

/// The state for a homeserver as the API shows it. Where `reference` (the planned or prior
/// state) spells a normalised value differently but equivalently (email case, domain case and
/// order, surrounding spaces), its spelling is kept, so nothing diffs on normalisation alone.
pub fn from_api(hs: &Homeserver, reference: &HomeserverState) -> HomeserverState {
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

impl HomeserverResource {
    /// R1 with the catalog: the region must be available. Best effort at plan time; the server
    /// checks again at apply.
    async fn check_region_available(&self, diags: &mut Diagnostics, region: &VS) {
        let Value::Value(code) = region else { return };
        let Ok(code) = RegionCode::parse(code) else { return };
        if let Some(catalog) = self.ctx.catalog().await {
            if let Err(e) = catalog.available_region(&code) {
                diag::invalid(diags, "region", e.message);
            }
        }
    }

    /// Waits for `running` after a create or update and turns the outcome into state and
    /// diagnostics. The homeserver exists whatever happens, so the state is always returned.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        diags: &mut Diagnostics,
        client: &Client,
        hs: Homeserver,
        reference: &HomeserverState,
        limit: Duration,
        settle: Duration,
        what: &str,
    ) -> Option<(HomeserverState, PrivateState)> {
        let name = hs.name.to_string();
        let outcome = wait_running(client, hs, limit, settle).await;
        let state = |h: &Homeserver| Some((from_api(h, reference), private(h.version)));
        match outcome {
            Waited::Running(h) => state(&h),
            Waited::Blocked(h) => {
                diag::root_warning(
                    diags,
                    format!("Homeserver `{name}` is blocked"),
                    format!(
                        "The {what} was applied, but the homeserver is blocked for all users: {}",
                        h.status_reason.clone().unwrap_or_else(|| "no reason given".into())
                    ),
                );
                state(&h)
            }
            Waited::Failed(h) => {
                diag::root_error(
                    diags,
                    format!("Homeserver `{name}` failed"),
                    format!("The homeserver did not start: {}", h.status_reason.clone().unwrap_or_else(|| "no reason given".into())),
                );
                state(&h)
            }
            Waited::TimedOut(h) => {
                let reason = h.status_reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
                diag::root_error(
                    diags,
                    format!("Timed out waiting for homeserver `{name}`"),
                    format!(
                        "The homeserver was not `running` within {} after the {what}; it is `{}`{reason}. Raise `timeouts.{}` if it needs longer.",
                        duration::show(limit),
                        h.status.as_str(),
                        if what == "create" { "create" } else { "update" }
                    ),
                );
                state(&h)
            }
            Waited::Gone => {
                diag::root_error(diags, format!("Homeserver `{name}` disappeared"), format!("The homeserver was deleted while waiting for the {what} to finish."));
                None
            }
            Waited::Error(e, h) => {
                diag::api_error(diags, format!("Cannot check homeserver `{name}` after the {what}"), &e, FIELDS);
                state(&h)
            }
        }
    }

    async fn do_read(&self, diags: &mut Diagnostics, state: HomeserverState) -> Option<(HomeserverState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let Value::Value(id) = &state.id else { return None };
        match client.get_opt::<Homeserver>(&item_path(id)).await {
            // Being deleted (out of band) counts as gone: it is planned again.
            Ok(Some(hs)) if hs.status == HomeserverStatus::Deleting => None,
            Ok(Some(hs)) => Some((from_api(&hs, &state), private(hs.version))),
            // Deleted out of band: removed from the state and planned again; never an error.
            Ok(None) => None,
            Err(e) => {
                diag::api_error(diags, "Cannot read homeserver", &e, FIELDS);
                Some((state, Value::Null))
            }
        }
    }

    async fn do_plan_create(&self, diags: &mut Diagnostics, config: HomeserverState) -> Option<(HomeserverState, PrivateState)> {
        let mut planned = inputs(&config, &HomeserverState::default());
        if planned.server_name.is_null() {
            planned.server_name = Value::Unknown;
        }
        for v in [
            &mut planned.id,
            &mut planned.status,
            &mut planned.status_reason,
            &mut planned.client_url,
            &mut planned.privacy_notice_url,
            &mut planned.terms_version,
            &mut planned.terms_accepted_at,
            &mut planned.created_at,
        ] {
            unknown(v);
        }
        self.check_region_available(diags, &planned.region).await;
        Some((planned, Value::Null))
    }

    async fn do_plan_update(
        &self,
        diags: &mut Diagnostics,
        prior: HomeserverState,
        config: HomeserverState,
        prior_private: PrivateState,
    ) -> Option<(HomeserverState, PrivateState, Vec<AttributePath>)> {
        let wanted = inputs(&config, &prior);
        let mut planned = prior.clone();
        planned.name = wanted.name;
        planned.region = wanted.region;
        planned.billing_plan_id = wanted.billing_plan_id;
        // Optional and computed: left out, the server's value stays (no replacement).
        planned.server_name = match &config.server_name {
            Value::Null => prior.server_name.clone(),
            other => other.clone(),
        };
        planned.federation_enabled = wanted.federation_enabled;
        planned.registration = wanted.registration;
        planned.allowed_email_domains = wanted.allowed_email_domains;
        planned.guest_access = wanted.guest_access;
        planned.encryption_by_default = wanted.encryption_by_default;
        planned.deletion_protection = wanted.deletion_protection;
        planned.volume = wanted.volume;
        planned.data_controller = wanted.data_controller;
        planned.timeouts = wanted.timeouts;

        let mut replace = Vec::new();
        for (attr, changed) in [
            ("name", differs(&planned.name, &prior.name)),
            ("region", differs(&planned.region, &prior.region)),
            ("billing_plan_id", differs(&planned.billing_plan_id, &prior.billing_plan_id)),
            ("server_name", differs(&planned.server_name, &prior.server_name)),
        ] {
            if changed {
                replace.push(diag::path(attr));
            }
        }
        if differs(&planned.region, &prior.region) {
            self.check_region_available(diags, &planned.region).await;
        }
        if replace.is_empty() {
            // Volumes only grow; shrinking is refused now rather than at apply.
            let size = |v: &Value<VolumeBlock>| v.as_ref_option().and_then(|v| v.size_gb.as_ref_option().and_then(|n| n.as_i64()));
            if let (Some(new), Some(old)) = (size(&planned.volume), size(&prior.volume)) {
                if new < old {
                    diag::invalid(diags, "volume.size_gb", format!("volumes only grow: {new} GB is smaller than the current {old} GB"));
                }
            }
        }
        if !same_settings(&planned, &prior) || !replace.is_empty() {
            for v in [&mut planned.status, &mut planned.status_reason, &mut planned.client_url, &mut planned.privacy_notice_url] {
                unknown(v);
            }
        }
        if !replace.is_empty() {
            for v in [&mut planned.id, &mut planned.terms_version, &mut planned.terms_accepted_at, &mut planned.created_at] {
                unknown(v);
            }
            if config.server_name.is_null() {
                planned.server_name = Value::Unknown;
            }
        }
        Some((planned, prior_private, replace))
    }

    async fn do_create(&self, diags: &mut Diagnostics, planned: HomeserverState) -> Option<(HomeserverState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let body = create_body(diags, &planned)?;
        let hs = match client.create::<_, Homeserver>("/v1/homeservers", &body, &idempotency_key()).await {
            Ok(hs) => hs,
            Err(e) => {
                diag::api_error(diags, "Cannot create homeserver", &e, FIELDS);
                return None;
            }
        };
        let limit = timeout(&planned.timeouts, "create", DEFAULT_CREATE_TIMEOUT);
        self.finish(diags, &client, hs, &planned, limit, Duration::ZERO, "create").await
    }

    async fn do_update(
        &self,
        diags: &mut Diagnostics,
        prior: HomeserverState,
        planned: HomeserverState,
        planned_private: PrivateState,
    ) -> Option<(HomeserverState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let id = known(diags, "id", &prior.id)?;
        if same_settings(&planned, &prior) {
            // Only `timeouts` changed: nothing to send.
            let mut state = prior.clone();
            state.timeouts = planned.timeouts.clone();
            return Some((state, planned_private));
        }
        let body = settings(diags, &planned)?;
        let hs = match client.put::<_, Homeserver>(&item_path(&id), &body, version_of(&planned_private)).await {
            Ok(hs) => hs,
            Err(e) => {
                diag::api_error(diags, "Cannot update homeserver", &e, FIELDS);
                return None;
            }
        };
        let limit = timeout(&planned.timeouts, "update", DEFAULT_UPDATE_TIMEOUT);
        // Only a change the homeserver's process sees makes it restart; give the runtime a
        // moment to pick the change up before trusting `running`.
        let settle = if runtime_relevant(&planned, &prior) { Duration::from_secs(3) } else { Duration::ZERO };
        self.finish(diags, &client, hs, &planned, limit, settle, "update").await
    }

    async fn do_destroy(&self, diags: &mut Diagnostics, prior: HomeserverState) -> Option<()> {
        let client = self.ctx.client(diags)?;
        let id = known(diags, "id", &prior.id)?;
        let name = prior.name.as_ref_option().cloned().unwrap_or_else(|| id.clone());
        match client.delete(&item_path(&id)).await {
            Ok((202, _)) => {}
            Ok(_) => return Some(()),
            Err(e) if e.is_not_found() => return Some(()),
            Err(e) if e.code() == Some(ErrorCode::DeletionProtected) => {
                diag::error(
                    diags,
                    diag::path("deletion_protection"),
                    format!("Homeserver `{name}` is protected from deletion"),
                    format!(
                        "{}\n\nSet `deletion_protection = false` and apply before destroying (or replacing) this homeserver.",
                        e.message()
                    ),
                );
                return None;
            }
            Err(e) => {
                diag::api_error(diags, "Cannot delete homeserver", &e, FIELDS);
                return None;
            }
        }
        // 202: the runtime tears it down; it is gone when reads answer 404.
        let limit = timeout(&prior.timeouts, "delete", DEFAULT_DELETE_TIMEOUT);
        let started = Instant::now();
        loop {
            tokio::time::sleep(poll_interval(started.elapsed())).await;
            match client.get_opt::<Homeserver>(&item_path(&id)).await {
                Ok(None) => return Some(()),
                Ok(Some(hs)) if hs.status == HomeserverStatus::Failed => {
                    diag::root_error(
                        diags,
                        format!("Cannot delete homeserver `{name}`"),
                        format!("The deletion failed: {}", hs.status_reason.unwrap_or_else(|| "no reason given".into())),
                    );
                    return None;
                }
                Ok(Some(hs)) => {
                    if started.elapsed() >= limit {
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
                }
                Err(e) => {
                    diag::api_error(diags, format!("Cannot check homeserver `{name}` while deleting it"), &e, FIELDS);
                    return None;
                }
            }
        }
    }

    async fn do_import(&self, diags: &mut Diagnostics, id: String) -> Option<(HomeserverState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let id = id.trim().to_owned();
        // Ids contain `_` (hs_...), which a name cannot: anything else is a name.
        let found = if id.contains('_') {
            client.get_opt::<Homeserver>(&item_path(&id)).await
        } else {
            match HomeserverName::parse(&id) {
                Ok(name) => client
                    .list_all::<Homeserver>(&format!("/v1/homeservers?name={}", escape(name.as_str())))
                    .await
                    .map(|items| items.into_iter().find(|h| h.name == name)),
                Err(e) => {
                    diag::root_error(diags, "Cannot import homeserver", format!("`{id}` is neither a homeserver id (hs_...) nor a name: {}", e.message));
                    return None;
                }
            }
        };
        match found {
            Ok(Some(hs)) => Some((from_api(&hs, &HomeserverState::default()), private(hs.version))),
            Ok(None) => {
                import_not_found(diags, "homeserver", &id);
                None
            }
            Err(e) => {
                diag::api_error(diags, "Cannot import homeserver", &e, FIELDS);
                None
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
impl Resource for HomeserverResource {
    type State<'a> = HomeserverState;
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
        _private: Self::PrivateState<'a>,
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
        guarded!(diags, self.do_plan_create(diags, config))
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
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        // Terraform 1.3+ asks before destroying; older ones learn it from the server at apply.
        if prior.deletion_protection == Value::Value(true) {
            let name = prior.name.as_ref_option().cloned().unwrap_or_default();
            diag::error(
                diags,
                diag::path("deletion_protection"),
                format!("Homeserver `{name}` is protected from deletion"),
                "Set `deletion_protection = false` and apply before destroying (or replacing) this homeserver.",
            );
            return None;
        }
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
        guarded!(diags, self.do_create(diags, planned))
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
        guarded!(diags, self.do_update(diags, prior, planned, planned_private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        guarded!(diags, self.do_destroy(diags, prior))
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_import(diags, id))
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
        check(&mut d, c);
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
        c.timeouts = Value::Value(TimeoutsBlock { create: s("ten minutes"), ..Default::default() });
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
