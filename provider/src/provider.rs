//! The provider: its configuration (`endpoint`, `token`), the shared API client, and the list of
//! resources and data sources.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use matrixhost_api::{Catalog, Organization, Plan, Region};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::resources::backup_policy::BackupPolicyResource;
use crate::resources::billing_plan::BillingPlanResource;
use crate::resources::homeserver::HomeserverResource;
use crate::resources::managed::entry;
use crate::resources::reserved_user::ReservedUserResource;

use crate::client::{ApiFailure, Client, RetryPolicy};
use crate::diag;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{int_of, Value, VN, VS};

pub const ENDPOINT_ENV: &str = "MATRIXHOST_ENDPOINT";
pub const TOKEN_ENV: &str = "MATRIXHOST_TOKEN";
pub const MAX_RETRIES_ENV: &str = "MATRIXHOST_MAX_RETRIES";
/// The provider's name: resources are `matrixhost_<name>`.
pub const NAME: &str = "matrixhost";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderConfig {
    pub endpoint: VS,
    pub token: VS,
    pub max_retries: VN,
}

/// What resources share: the client once the provider is configured, and the catalog (read
/// once per run, for plan-time checks that need it).
#[derive(Default)]
pub struct Ctx {
    client: RwLock<Option<Client>>,
    deferred: RwLock<bool>,
    catalog: tokio::sync::Mutex<Option<Option<Catalog>>>,
}

impl Ctx {
    /// The API client, or an error diagnostic when the provider is not configured.
    pub fn client(&self, diags: &mut Diagnostics) -> Option<Client> {
        if let Some(c) = self.client.read().ok().and_then(|g| g.clone()) {
            return Some(c);
        }
        let deferred = self.deferred.read().map(|g| *g).unwrap_or(false);
        if deferred {
            diag::root_error(
                diags,
                "The matrixhost provider is not configured yet",
                "The provider's `endpoint` or `token` depends on a value that is not known until apply. Configure the provider with values known at plan time.",
            );
        } else {
            diag::root_error(diags, "The matrixhost provider is not configured", "The provider was used before it was configured.");
        }
        None
    }

    /// The client if there is one (plan-time checks that are best effort).
    pub fn client_opt(&self) -> Option<Client> {
        self.client.read().ok().and_then(|g| g.clone())
    }

    /// The regions and plans, read once per provider process. `None` when they cannot be read:
    /// the checks that need them then run on the server at apply.
    pub async fn catalog(&self) -> Option<Catalog> {
        let client = self.client_opt()?;
        let mut guard = self.catalog.lock().await;
        if guard.is_none() {
            let regions = client.list_all::<Region>("/v1/regions").await;
            let plans = client.list_all::<Plan>("/v1/plans").await;
            *guard = Some(match (regions, plans) {
                (Ok(regions), Ok(plans)) => Some(Catalog { regions, plans, terms_version: String::new() }),
                _ => None,
            });
        }
        guard.clone().flatten()
    }
}

pub struct MatrixhostProvider {
    pub ctx: Arc<Ctx>,
}

impl Default for MatrixhostProvider {
    fn default() -> Self {
        Self { ctx: Arc::new(Ctx::default()) }
    }
}

pub fn provider_schema() -> Schema {
    BlockBuilder::new(
        "The matrixhost provider manages hosted Matrix homeservers on matrixhost: their billing plans, reserved users and backup policies.",
    )
    .optional(
        "endpoint",
        T::String,
        "Base URL of the matrixhost API, e.g. `https://api.matrixhost.example`. Can also be set with the `MATRIXHOST_ENDPOINT` environment variable.",
    )
    .optional(
        "token",
        T::String,
        "API token of your organization (`mh_...`). Can also be set with the `MATRIXHOST_TOKEN` environment variable. Never printed, never logged.",
    )
    .sensitive()
    .optional(
        "max_retries",
        T::Number,
        "How many times a failed API call (HTTP 429, 5xx, or no answer) is retried, with exponential backoff that honours `Retry-After`. Defaults to 5; can also be set with `MATRIXHOST_MAX_RETRIES`.",
    )
    .schema()
}

/// A value from the configuration or else from the environment. `Err(())` when unknown.
fn setting(v: &VS, env: &str) -> Result<Option<String>, ()> {
    match v {
        Value::Unknown => Err(()),
        Value::Value(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        _ => Ok(std::env::var(env).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())),
    }
}

fn validate_endpoint(diags: &mut Diagnostics, endpoint: &str, attr: bool) -> bool {
    let ok = (endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        && endpoint.len() > "https://".len()
        && !endpoint.contains(char::is_whitespace);
    if !ok {
        let msg = format!("`{endpoint}` is not a URL of the form https://host[:port]");
        if attr {
            diag::invalid(diags, "endpoint", msg);
        } else {
            diag::root_error(diags, format!("Invalid {ENDPOINT_ENV}"), msg);
        }
    }
    ok
}

#[async_trait]
impl Provider for MatrixhostProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(provider_schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        if let Value::Value(e) = &config.endpoint {
            validate_endpoint(diags, e.trim(), true);
        }
        if let Value::Value(n) = &config.max_retries {
            if !matches!(n.as_i64(), Some(0..=20)) {
                diag::invalid(diags, "max_retries", format!("{n} is not a retry count; use a whole number from 0 to 20"));
            }
        }
        Some(())
    }

    async fn configure<'a>(&self, diags: &mut Diagnostics, terraform_version: String, config: Self::Config<'a>) -> Option<()> {
        let (endpoint, token) = match (setting(&config.endpoint, ENDPOINT_ENV), setting(&config.token, TOKEN_ENV)) {
            (Ok(e), Ok(t)) => (e, t),
            _ => {
                if let Ok(mut g) = self.ctx.deferred.write() {
                    *g = true;
                }
                return Some(());
            }
        };
        let mut missing = Vec::new();
        if endpoint.is_none() {
            missing.push(format!("the API endpoint: set `endpoint` in the provider block or the {ENDPOINT_ENV} environment variable"));
        }
        if token.is_none() {
            missing.push(format!("the API token: set `token` in the provider block or the {TOKEN_ENV} environment variable"));
        }
        if !missing.is_empty() {
            diag::root_error(
                diags,
                "Missing matrixhost credentials",
                format!("The matrixhost provider needs {}.", missing.join("; and ")),
            );
            return Some(());
        }
        let (endpoint, token) = (endpoint.unwrap_or_default(), token.unwrap_or_default());
        if !validate_endpoint(diags, &endpoint, config.endpoint.is_value()) {
            return Some(());
        }
        let retries = match &config.max_retries {
            Value::Value(_) => int_of(&config.max_retries),
            _ => std::env::var(MAX_RETRIES_ENV).ok().and_then(|s| s.trim().parse::<i64>().ok()),
        }
        .unwrap_or(5)
        .clamp(0, 20);
        let policy = RetryPolicy { max_attempts: retries as u32 + 1, ..RetryPolicy::default() };
        let user_agent = format!("terraform-provider-matrixhost/{VERSION} terraform/{terraform_version}");
        let client = match Client::new(&endpoint, &token, policy, &user_agent) {
            Ok(c) => c,
            Err(e) => {
                diag::root_error(diags, "Invalid matrixhost provider configuration", e);
                return Some(());
            }
        };
        // One call now, so missing or wrong credentials fail here, once, clearly.
        match client.get::<Organization>("/v1/organization").await {
            Ok(org) => {
                tracing::info!(org = %org.name, endpoint = %endpoint, "configured");
            }
            Err(e @ ApiFailure::Status { status: 401 | 403, .. }) => {
                diag::root_error(
                    diags,
                    "Invalid matrixhost API token",
                    format!(
                        "matrixhost at {endpoint} refused the API token: {}. Check `token` in the provider block or {TOKEN_ENV}; tokens are created with `matrixhostd token create`.",
                        e.message()
                    ),
                );
                return Some(());
            }
            Err(e) => {
                diag::root_error(diags, format!("Cannot check the matrixhost credentials at {endpoint}"), e.to_string());
                return Some(());
            }
        }
        if let Ok(mut g) = self.ctx.client.write() {
            *g = Some(client);
        }
        Some(())
    }

    fn get_resources(&self, _diags: &mut Diagnostics) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        let ctx = &self.ctx;
        let mut m: HashMap<String, Box<dyn DynamicResource>> = HashMap::new();
        m.extend([
            entry::<BillingPlanResource>(ctx),
            entry::<HomeserverResource>(ctx),
            entry::<ReservedUserResource>(ctx),
            entry::<BackupPolicyResource>(ctx),
        ]);
        Some(m)
    }

    fn get_data_sources(&self, _diags: &mut Diagnostics) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        let ctx = &self.ctx;
        let mut m: HashMap<String, Box<dyn DynamicDataSource>> = HashMap::new();
        m.insert("regions".into(), Box::new(crate::data_sources::RegionsDataSource { ctx: ctx.clone() }));
        m.insert("plans".into(), Box::new(crate::data_sources::PlansDataSource { ctx: ctx.clone() }));
        m.insert("homeserver".into(), Box::new(crate::data_sources::HomeserverDataSource { ctx: ctx.clone() }));
        m.insert("backups".into(), Box::new(crate::data_sources::BackupsDataSource { ctx: ctx.clone() }));
        Some(m)
    }
}
