//! Shapes shared by every endpoint: the error body, list pages and the organization.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{Email, OrgName};

/// Every machine-readable error code the API gives; clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 400: the request is malformed.
    InvalidJson,
    InvalidBody,
    UnknownField,
    InvalidHeader,
    InvalidQuery,
    // 401, 403.
    /// A webhook whose `Stripe-Signature` does not verify.
    InvalidSignature,
    Unauthorized,
    EmailNotVerified,
    // 404, 405.
    NotFound,
    MethodNotAllowed,
    // 422: a field breaks a rule the schema states.
    InvalidField,
    // 409: well-formed, but in conflict with stored state.
    Conflict,
    VersionConflict,
    NameTaken,
    EmailTaken,
    InUse,
    Deleting,
    DeletionProtected,
    PlanLimit,
    MauCapExceeded,
    VolumeShrink,
    RegionUnavailable,
    IdempotencyKeyReused,
    IdempotencyKeyBusy,
    BackupRunning,
    RestoreRunning,
    BackupNotRestorable,
    NotRunning,
    // 402: a payment is needed or was refused (R11, R12).
    /// No card is on file to pay in advance with.
    PaymentRequired,
    /// The payment processor refused the charge (a declined card); nothing was changed.
    PaymentFailed,
    // 429, 5xx.
    RateLimited,
    HomeserverUnavailable,
    Internal,
    /// The payment processor could not be reached; nothing was changed.
    PaymentProcessorUnavailable,
    /// Test builds only: a fault injected by a test.
    InjectedFault,
    /// A code from a newer server than this client knows.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::UnknownField => "unknown_field",
            Self::InvalidHeader => "invalid_header",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidSignature => "invalid_signature",
            Self::Unauthorized => "unauthorized",
            Self::EmailNotVerified => "email_not_verified",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidField => "invalid_field",
            Self::Conflict => "conflict",
            Self::VersionConflict => "version_conflict",
            Self::NameTaken => "name_taken",
            Self::EmailTaken => "email_taken",
            Self::InUse => "in_use",
            Self::Deleting => "deleting",
            Self::DeletionProtected => "deletion_protected",
            Self::PlanLimit => "plan_limit",
            Self::MauCapExceeded => "mau_cap_exceeded",
            Self::VolumeShrink => "volume_shrink",
            Self::RegionUnavailable => "region_unavailable",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyBusy => "idempotency_key_busy",
            Self::BackupRunning => "backup_running",
            Self::RestoreRunning => "restore_running",
            Self::BackupNotRestorable => "backup_not_restorable",
            Self::NotRunning => "not_running",
            Self::PaymentRequired => "payment_required",
            Self::PaymentFailed => "payment_failed",
            Self::PaymentProcessorUnavailable => "payment_processor_unavailable",
            Self::RateLimited => "rate_limited",
            Self::HomeserverUnavailable => "homeserver_unavailable",
            Self::Internal => "internal",
            Self::InjectedFault => "injected_fault",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error shape of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// Machine-readable code (`ErrorCode`), e.g. `invalid_field`, `not_found`, `version_conflict`.
    pub code: ErrorCode,
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

#[cfg(test)]
mod error_code_tests {
    use super::ErrorCode;

    #[test]
    fn codes_serialise_as_their_names_and_unknown_ones_are_other() {
        for code in [ErrorCode::InvalidField, ErrorCode::IdempotencyKeyReused, ErrorCode::PlanLimit, ErrorCode::Internal] {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(serde_json::json!(code.as_str())).unwrap(), code);
        }
        assert_eq!(serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(), ErrorCode::Other);
    }
}
