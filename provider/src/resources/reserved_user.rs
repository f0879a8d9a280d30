//! `matrixhost_reserved_user`: a user holding a slot inside the homeserver's MAU cap (R8).

use std::sync::Arc;

use async_trait::async_trait;
use matrixhost_api::{DisplayName, Email, InitialPassword, Localpart, ReservedUser, ReservedUserCreate, ReservedUserUpdate};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{
    check_str, differs, import_not_found, known, private, seg, split_import_id, unknown, version_of, wait_applied, PrivateState,
    APPLY_WAIT_LIMIT,
};
use crate::client::{escape, idempotency_key};
use crate::diag;
use crate::guarded;
use crate::provider::Ctx;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{keep_equivalent, opt_s, or_default, s, Value, VB, VS};

pub const TYPE: &str = "matrixhost_reserved_user";
const FIELDS: &[&str] = &["homeserver_id", "email", "localpart", "display_name", "admin", "initial_password"];

pub struct ReservedUserResource {
    pub ctx: Arc<Ctx>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservedUserState {
    pub id: VS,
    pub homeserver_id: VS,
    pub email: VS,
    pub localpart: VS,
    pub display_name: VS,
    pub admin: VB,
    pub initial_password: VS,
    pub user_id: VS,
}

pub fn schema() -> Schema {
    BlockBuilder::new(
        "A reserved user of a homeserver (R8): it holds one slot inside the MAU cap, so the user can always log in, even after 30 days without activity. With a `localpart`, the account `@localpart:server_name` is created for the user. Reserved users count against the cap: on a 50-user plan with 10 reserved users, 40 other users fit. Create and update return once the running homeserver holds the slot and has the account as configured; a homeserver that cannot apply it fails the apply with the reason.",
    )
    .computed("id", T::String, "The reserved user's id (`ru_...`).")
    .required("homeserver_id", T::String, "Id of the homeserver. Changing it forces a new reserved user.")
    .required("email", T::String, "The user's email address, unique per homeserver. Compared case-insensitively. Changing it forces a new reserved user.")
    .optional("localpart", T::String, "Matrix localpart of the account to create (`alice` in `@alice:example.com`): 1-64 characters of a-z, 0-9, `.`, `_`, `=`, `-`, `/`, `+`. Changing it forces a new reserved user.")
    .optional("display_name", T::String, "Display name of the account (1-256 characters).")
    .optional_computed("admin", T::Bool, "Whether the account is a server admin. Defaults to `false`. Admins still count against the MAU cap.")
    .optional("initial_password", T::String, "**Deprecated**: Terraform keeps this value in its state. Leave it out: a reserved user with a `localpart` is then invited by email to choose their own password (a one-time link, valid 72 hours). Initial password of the account (12-1024 characters), sent once at creation and never read back.")
    .sensitive()
    .computed("user_id", T::String, "The Matrix user id, `@localpart:server_name`, when a `localpart` is set.")
    .schema()
}

fn norm_email(s: &str) -> Option<String> {
    Email::parse(s).ok().map(|e| e.to_string())
}

fn check(diags: &mut Diagnostics, c: &ReservedUserState) {
    if let Value::Value(id) = &c.homeserver_id {
        if id.trim().is_empty() {
            diag::invalid(diags, "homeserver_id", "must be the id of a homeserver (hs_...)");
        }
    }
    check_str(diags, "email", &c.email, Email::parse);
    check_str(diags, "localpart", &c.localpart, Localpart::parse);
    check_str(diags, "display_name", &c.display_name, DisplayName::parse);
    check_str(diags, "initial_password", &c.initial_password, InitialPassword::parse);
    if !matches!(c.initial_password, Value::Null) {
        // On the resource, not the attribute: Terraform would quote the password's line.
        diag::root_warning(
            diags,
            "Deprecated attribute: initial_password",
            "Terraform stores initial_password in its state in plain text. Remove it: a reserved user with a localpart is invited by email to choose their own password, through a one-time link valid for 72 hours.",
        );
    }
}

fn from_api(u: &ReservedUser, reference: &ReservedUserState) -> ReservedUserState {
    ReservedUserState {
        id: s(&u.id),
        homeserver_id: s(&u.homeserver_id),
        email: keep_equivalent(&reference.email, s(u.email.as_str()), norm_email),
        localpart: opt_s(u.localpart.as_ref()),
        display_name: opt_s(u.display_name.as_ref()),
        admin: Value::Value(u.admin),
        // Write-only: whatever the configuration said stays in the state.
        initial_password: reference.initial_password.clone(),
        user_id: opt_s(u.user_id.as_ref()),
    }
}

fn collection(homeserver_id: &str) -> String {
    format!("/v1/homeservers/{}/reserved-users", seg(homeserver_id))
}

fn item(homeserver_id: &str, id: &str) -> String {
    format!("{}/{}", collection(homeserver_id), seg(id))
}

fn opt_parse<T>(diags: &mut Diagnostics, attr: &str, v: &VS, parse: impl Fn(&str) -> Result<T, matrixhost_api::RuleError>) -> Option<Option<T>> {
    match v {
        Value::Value(text) => check_str(diags, attr, &s(text.clone()), parse).map(Some),
        Value::Null => Some(None),
        Value::Unknown => {
            diag::invalid(diags, attr, "the value is still unknown at apply time");
            None
        }
    }
}

impl ReservedUserResource {
    async fn do_read(&self, diags: &mut Diagnostics, state: ReservedUserState) -> Option<(ReservedUserState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let (Value::Value(hs), Value::Value(id)) = (&state.homeserver_id, &state.id) else { return None };
        match client.get_listed::<ReservedUser>(&collection(hs), id).await {
            Ok(Some(u)) => Some((from_api(&u, &state), private(u.version))),
            // Deleted out of band (or its homeserver is gone): planned again, never an error.
            Ok(None) => None,
            Err(e) => {
                diag::api_error(diags, "Cannot read reserved user", &e, FIELDS);
                Some((state, Value::Null))
            }
        }
    }

    async fn do_create(&self, diags: &mut Diagnostics, planned: ReservedUserState) -> Option<(ReservedUserState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let before = diags.errors.len();
        let hs = known(diags, "homeserver_id", &planned.homeserver_id);
        let email = known(diags, "email", &planned.email).and_then(|e| check_str(diags, "email", &s(e), Email::parse));
        let localpart = opt_parse(diags, "localpart", &planned.localpart, Localpart::parse);
        let display_name = opt_parse(diags, "display_name", &planned.display_name, DisplayName::parse);
        let admin = known(diags, "admin", &planned.admin);
        let password = opt_parse(diags, "initial_password", &planned.initial_password, InitialPassword::parse);
        if diags.errors.len() > before {
            return None;
        }
        let body = ReservedUserCreate {
            email: email?,
            localpart: localpart?,
            display_name: display_name?,
            admin: admin?,
            initial_password: password?,
        };
        let hs = hs?;
        match client.create::<_, ReservedUser>(&collection(&hs), &body, &idempotency_key()).await {
            Ok(u) => {
                let u = wait_applied(diags, &client, &item(&hs, &u.id), "reserved user", u, APPLY_WAIT_LIMIT).await;
                Some((from_api(&u, &planned), private(u.version)))
            }
            Err(e) => {
                diag::api_error(diags, "Cannot create reserved user", &e, FIELDS);
                None
            }
        }
    }

    async fn do_update(
        &self,
        diags: &mut Diagnostics,
        prior: ReservedUserState,
        planned: ReservedUserState,
        planned_private: PrivateState,
    ) -> Option<(ReservedUserState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        if planned.display_name == prior.display_name && planned.admin == prior.admin {
            // Only the write-only initial password changed: it is kept in the state only.
            let mut state = prior.clone();
            state.initial_password = planned.initial_password.clone();
            return Some((state, planned_private));
        }
        let hs = known(diags, "homeserver_id", &prior.homeserver_id)?;
        let id = known(diags, "id", &prior.id)?;
        let display_name = opt_parse(diags, "display_name", &planned.display_name, DisplayName::parse)?;
        let admin = known(diags, "admin", &planned.admin)?;
        let body = ReservedUserUpdate { display_name, admin };
        match client.put::<_, ReservedUser>(&item(&hs, &id), &body, version_of(&planned_private)).await {
            Ok(u) => {
                let u = wait_applied(diags, &client, &item(&hs, &id), "reserved user", u, APPLY_WAIT_LIMIT).await;
                Some((from_api(&u, &planned), private(u.version)))
            }
            Err(e) => {
                diag::api_error(diags, "Cannot update reserved user", &e, FIELDS);
                None
            }
        }
    }

    async fn do_destroy(&self, diags: &mut Diagnostics, prior: ReservedUserState) -> Option<()> {
        let client = self.ctx.client(diags)?;
        let hs = known(diags, "homeserver_id", &prior.homeserver_id)?;
        let id = known(diags, "id", &prior.id)?;
        match client.delete(&item(&hs, &id)).await {
            Ok(_) => Some(()),
            Err(e) if e.is_not_found() => Some(()),
            Err(e) => {
                diag::api_error(diags, "Cannot delete reserved user", &e, FIELDS);
                None
            }
        }
    }

    async fn do_import(&self, diags: &mut Diagnostics, id: String) -> Option<(ReservedUserState, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let Some((hs, email)) = split_import_id(&id) else {
            diag::root_error(diags, "Cannot import reserved user", format!("`{id}` is not `<homeserver_id>/<email>`, e.g. `hs_abc123/alice@example.com`."));
            return None;
        };
        let email = match Email::parse(email) {
            Ok(e) => e,
            Err(e) => {
                diag::root_error(diags, "Cannot import reserved user", e.message);
                return None;
            }
        };
        let path = format!("{}?email={}", collection(hs), escape(email.as_str()));
        match client.list_all::<ReservedUser>(&path).await {
            Ok(items) => match items.into_iter().find(|u| u.email == email) {
                Some(u) => Some((from_api(&u, &ReservedUserState::default()), private(u.version))),
                None => {
                    import_not_found(diags, "reserved user", &id);
                    None
                }
            },
            Err(e) if e.is_not_found() => {
                import_not_found(diags, "reserved user", &id);
                None
            }
            Err(e) => {
                diag::api_error(diags, "Cannot import reserved user", &e, FIELDS);
                None
            }
        }
    }
}

#[async_trait]
impl Resource for ReservedUserResource {
    type State<'a> = ReservedUserState;
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
        _diags: &mut Diagnostics,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = config.clone();
        planned.admin = or_default(&config.admin, false);
        unknown(&mut planned.id);
        planned.user_id = match &config.localpart {
            Value::Null => Value::Null,
            _ => Value::Unknown,
        };
        Some((planned, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut planned = prior.clone();
        planned.homeserver_id = config.homeserver_id.clone();
        planned.email = keep_equivalent(&prior.email, config.email.clone(), norm_email);
        planned.localpart = config.localpart.clone();
        planned.display_name = config.display_name.clone();
        planned.admin = or_default(&config.admin, false);
        planned.initial_password = config.initial_password.clone();
        let mut replace = Vec::new();
        for (attr, changed) in [
            ("homeserver_id", differs(&planned.homeserver_id, &prior.homeserver_id)),
            ("email", differs(&planned.email, &prior.email)),
            ("localpart", differs(&planned.localpart, &prior.localpart)),
        ] {
            if changed {
                replace.push(crate::diag::path(attr));
            }
        }
        if !replace.is_empty() {
            unknown(&mut planned.id);
            planned.user_id = if config.localpart.is_null() { Value::Null } else { Value::Unknown };
        }
        Some((planned, prior_private, replace))
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

    #[test]
    fn rules_and_secrets() {
        let mut d = Diagnostics::default();
        check(
            &mut d,
            &ReservedUserState {
                email: s("not-an-email"),
                localpart: s("Alice"),
                initial_password: s("hunter2"),
                ..Default::default()
            },
        );
        assert_eq!(d.errors.len(), 3, "{:?}", d.errors);
        assert!(d.errors.iter().all(|e| !e.detail.contains("hunter2")));
    }
}
