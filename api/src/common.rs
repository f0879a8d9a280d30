//! Shapes shared by every endpoint: the error body, list pages and the organization.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{Email, OrgName};

/// The one error shape of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// Machine-readable code, e.g. `invalid_field`, `not_found`, `version_conflict`.
    pub code: String,
    /// Human-readable message; names the rule (e.g. `R1`) when a product rule refused the request.
    pub message: String,
    /// The request field at fault, as a JSON path such as `volume.encrypted`, when there is one.
    pub field: Option<String>,
    /// The request id, also in the `x-request-id` response header and in the server's logs.
    pub request_id: String,
}

/// One page of a list. Pass `next_page_token` back as `page_token` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// The organization that owns the calling token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Organization {
    pub id: String,
    pub name: OrgName,
    pub email: Email,
    /// R15: an organization must verify its email before it can subscribe.
    pub email_verified: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// Whether the homeserver has put an object's latest change into effect. A create or update
/// is answered at once; clients that need the change in force (Terraform does) poll until it
/// is no longer `pending`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStatus {
    /// The running homeserver has applied this version (or nothing runs that could apply it).
    #[default]
    Applied,
    /// The homeserver has not applied this version yet.
    Pending,
    /// The homeserver could not apply this version; `apply_error` says why.
    Failed,
}

impl ApplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }
}
