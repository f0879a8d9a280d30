//! `ReservedUser`: a user holding a slot inside the MAU cap (R8).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ApplyStatus;
use crate::domain::{DisplayName, Email, InitialPassword, Localpart};

/// Body of `POST /v1/homeservers/{id}/reserved-users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservedUserCreate {
    /// The user's email (normalised to lower case); unique per homeserver.
    pub email: Email,
    /// With a localpart, the account `@localpart:server_name` is created for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localpart: Option<Localpart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// Server admin flag on the account.
    #[serde(default)]
    pub admin: bool,
    /// Write-only initial password for the account; never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<InitialPassword>,
}

/// Body of `PUT /v1/homeservers/{id}/reserved-users/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservedUserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    #[serde(default)]
    pub admin: bool,
}

/// A reserved user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReservedUser {
    pub id: String,
    pub homeserver_id: String,
    pub email: Email,
    pub localpart: Option<Localpart>,
    /// The Matrix user id, `@localpart:server_name`, when a localpart is set.
    pub user_id: Option<String>,
    pub display_name: Option<DisplayName>,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; send it back as `If-Match`.
    pub version: i64,
    /// Whether the homeserver holds the slot and has the account as this version describes.
    #[serde(default)]
    pub apply_status: ApplyStatus,
    /// Why the homeserver could not apply this version, when `apply_status` is `failed`.
    #[serde(default)]
    pub apply_error: Option<String>,
}
