//! `matrixhost_reserved_user`: a user holding a slot inside the homeserver's MAU cap (R8).

use async_trait::async_trait;
use matrixhost_api::{DisplayName, Email, InitialPassword, Localpart, ReservedUser, ReservedUserCreate, ReservedUserUpdate};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::Diagnostics;

use super::managed::{ApiResource, Planned, Write};
use super::{check_str, differs, known, seg, split_import_id, unknown, wait_applied, APPLY_WAIT_LIMIT};
use crate::client::{escape, ApiFailure, Client};
use crate::diag;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{keep_equivalent, opt_s, or_default, s, Value, VB, VS};

pub struct ReservedUserResource;

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


fn norm_email(s: &str) -> Option<String> {
    Email::parse(s).ok().map(|e| e.to_string())
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

#[async_trait]
impl ApiResource for ReservedUserResource {
    type State = ReservedUserState;
    type Object = ReservedUser;
    type CreateBody = ReservedUserCreate;
    type UpdateBody = ReservedUserUpdate;

    const TYPE: &'static str = "matrixhost_reserved_user";
    const NOUN: &'static str = "reserved user";
    const FIELDS: &'static [&'static str] = &["homeserver_id", "email", "localpart", "display_name", "admin", "initial_password"];

    fn schema() -> Schema {
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

    fn plan_new(config: &ReservedUserState) -> ReservedUserState {
        let mut planned = config.clone();
        planned.admin = or_default(&config.admin, false);
        unknown(&mut planned.id);
        planned.user_id = if config.localpart.is_null() { Value::Null } else { Value::Unknown };
        planned
    }

    fn plan_change(_diags: &mut Diagnostics, prior: &ReservedUserState, config: &ReservedUserState) -> Planned<ReservedUserState> {
        let mut planned = prior.clone();
        planned.homeserver_id = config.homeserver_id.clone();
        planned.email = keep_equivalent(&prior.email, config.email.clone(), norm_email);
        planned.localpart = config.localpart.clone();
        planned.display_name = config.display_name.clone();
        planned.admin = or_default(&config.admin, false);
        planned.initial_password = config.initial_password.clone();
        let replace: Vec<&'static str> = [
            ("homeserver_id", differs(&planned.homeserver_id, &prior.homeserver_id)),
            ("email", differs(&planned.email, &prior.email)),
            ("localpart", differs(&planned.localpart, &prior.localpart)),
        ]
        .into_iter()
        .filter_map(|(attr, changed)| changed.then_some(attr))
        .collect();
        if !replace.is_empty() {
            unknown(&mut planned.id);
            planned.user_id = if config.localpart.is_null() { Value::Null } else { Value::Unknown };
        }
        Planned { state: planned, replace }
    }

    fn create_path(diags: &mut Diagnostics, planned: &ReservedUserState) -> Option<String> {
        known(diags, "homeserver_id", &planned.homeserver_id).map(|hs| collection(&hs))
    }

    fn item_path(state: &ReservedUserState) -> Option<String> {
        match (&state.homeserver_id, &state.id) {
            (Value::Value(hs), Value::Value(id)) => Some(item(hs, id)),
            _ => None,
        }
    }

    fn version(u: &ReservedUser) -> i64 {
        u.version
    }

    fn to_state(u: &ReservedUser, reference: &ReservedUserState) -> ReservedUserState {
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

    fn create_body(diags: &mut Diagnostics, planned: &ReservedUserState) -> Option<ReservedUserCreate> {
        let before = diags.errors.len();
        let email = known(diags, "email", &planned.email).and_then(|e| check_str(diags, "email", &s(e), Email::parse));
        let localpart = opt_parse(diags, "localpart", &planned.localpart, Localpart::parse);
        let display_name = opt_parse(diags, "display_name", &planned.display_name, DisplayName::parse);
        let admin = known(diags, "admin", &planned.admin);
        let password = opt_parse(diags, "initial_password", &planned.initial_password, InitialPassword::parse);
        if diags.errors.len() > before {
            return None;
        }
        Some(ReservedUserCreate { email: email?, localpart: localpart?, display_name: display_name?, admin: admin?, initial_password: password? })
    }

    fn update_body(diags: &mut Diagnostics, planned: &ReservedUserState) -> Option<ReservedUserUpdate> {
        let display_name = opt_parse(diags, "display_name", &planned.display_name, DisplayName::parse)?;
        let admin = known(diags, "admin", &planned.admin)?;
        Some(ReservedUserUpdate { display_name, admin })
    }

    /// Only the write-only initial password changed: it lives in the state only.
    fn sends_update(prior: &ReservedUserState, planned: &ReservedUserState) -> bool {
        planned.display_name != prior.display_name || planned.admin != prior.admin
    }

    /// From one listing of the homeserver's reserved users per refresh, not a request each.
    async fn fetch(client: &Client, state: &ReservedUserState) -> Result<Option<ReservedUser>, ApiFailure> {
        match (&state.homeserver_id, &state.id) {
            (Value::Value(hs), Value::Value(id)) => client.get_listed(&collection(hs), id).await,
            _ => Ok(None),
        }
    }

    async fn settle(client: &Client, diags: &mut Diagnostics, _write: Write, u: ReservedUser, _prior: Option<&ReservedUserState>, _planned: &ReservedUserState) -> Option<ReservedUser> {
        Some(wait_applied(diags, client, &item(&u.homeserver_id, &u.id), Self::NOUN, u, APPLY_WAIT_LIMIT).await)
    }

    async fn lookup(client: &Client, id: &str) -> Result<Result<Option<ReservedUser>, ApiFailure>, String> {
        let Some((hs, email)) = split_import_id(id) else {
            return Err(format!("`{id}` is not `<homeserver_id>/<email>`, e.g. `hs_abc123/alice@example.com`."));
        };
        let email = Email::parse(email).map_err(|e| e.message)?;
        let path = format!("{}?email={}", collection(hs), escape(email.as_str()));
        Ok(client.list_all::<ReservedUser>(&path).await.map(|items| items.into_iter().find(|u| u.email == email)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_secrets() {
        let mut d = Diagnostics::default();
        ReservedUserResource::check(
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
