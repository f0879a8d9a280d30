//! The control plane's domain: each resource's table, queries and rules, one module per
//! resource. Functions here return [`DomainError`]; what that means in HTTP is decided in
//! `http/`, and the workers (`runtime/`, `backup/`) use the same functions without any HTTP.

pub mod access_log;
pub mod account_links;
pub mod apply;
pub mod accounts;
pub mod backup_policies;
pub mod backup_schedule;
pub mod backups;
pub mod billing_plans;
pub mod billing_profiles;
pub mod charges;
pub mod events;
pub mod homeservers;
pub mod idempotency_keys;
pub mod invoices;
pub mod orgs;
pub mod outbox;
pub mod passwords;
pub mod reserved_users;
pub mod runtime;
pub mod sessions;
pub mod stripe_events;

use matrixhost_api::{ErrorCode, RuleError};

/// What a write is checked against and recorded with.
pub struct WriteContext<'a> {
    /// The runtime runs homeservers (so changes are applied by it, not at once).
    pub hosted: bool,
    pub now: chrono::DateTime<chrono::Utc>,
    pub catalog: &'a matrixhost_api::Catalog,
}

/// Why a domain operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A resource named by a request field does not exist.
    #[error("{message}")]
    Missing { field: String, message: String },
    /// A request field breaks a rule; the message starts with the field's name.
    #[error("{message}")]
    Invalid { code: ErrorCode, field: String, message: String },
    /// The request is valid but the current state refuses it (a duplicate, in use, busy).
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String, field: Option<String> },
    /// The caller may not do this yet (R15: an unverified email).
    #[error("{message}")]
    Forbidden { code: ErrorCode, message: String },
    /// R11, R12: a payment is needed, or the processor refused it; nothing was changed.
    #[error("{message}")]
    Payment { code: ErrorCode, field: String, message: String },
    /// The payment processor could not be reached; nothing was changed.
    #[error("{0}")]
    PaymentProcessor(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value does not parse, or another internal inconsistency.
    #[error("internal: {0}")]
    Internal(String),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// `field` breaks a rule (the message starts with the field's name).
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        DomainError::Invalid { code: ErrorCode::InvalidField, field: field.to_owned(), message: format!("{field}: {message}") }
    }

    pub fn rule(field: &str, err: RuleError) -> Self {
        Self::field(field, err.message)
    }

    /// A well-formed request that the plan in force (or scheduled) does not allow: a conflict
    /// with the subscription's state (409), which an upgrade or Additional Users resolve.
    pub fn plan_limit(field: &str, message: impl std::fmt::Display) -> Self {
        DomainError::Conflict { code: ErrorCode::PlanLimit, message: format!("{field}: {message}"), field: Some(field.to_owned()) }
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        DomainError::Conflict { code, message: message.into(), field: None }
    }

    pub fn conflict_on(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        DomainError::Conflict { code, message: message.into(), field: Some(field.to_owned()) }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        DomainError::Internal(detail.to_string())
    }

    /// What a refusal or failure of the payment processor means for a request whose `field`
    /// named the card (or the change that needed a charge).
    pub fn from_stripe(field: &str, e: crate::stripe_api::StripeError) -> Self {
        if e.unreachable() {
            return DomainError::PaymentProcessor(format!("the payment processor is not available ({}); nothing was changed, try again", e.message));
        }
        if e.is_card_error() {
            return DomainError::Payment { code: ErrorCode::PaymentFailed, field: field.to_owned(), message: format!("{field}: the card was refused: {} Nothing was changed.", e.message) };
        }
        DomainError::internal(format!("the payment processor refused a request ({}): {}", e.status, e.message))
    }

    /// The stale-write conflict every versioned resource shares.
    pub fn version_conflict(what: &str) -> Self {
        Self::conflict(ErrorCode::VersionConflict, format!("{what} changed concurrently; read it again and retry"))
    }
}

impl From<anyhow::Error> for DomainError {
    fn from(e: anyhow::Error) -> Self {
        DomainError::Internal(format!("{e:#}"))
    }
}

/// `If-Match`: a write applies only to the version the caller read (none given: any version).
pub fn check_version(expected: Option<i64>, current: i64, what: &str) -> DomainResult<()> {
    match expected {
        Some(expected) if expected != current => {
            Err(DomainError::conflict(ErrorCode::VersionConflict, format!("{what} is at version {current}, not {expected}; read it again and retry")))
        }
        _ => Ok(()),
    }
}

/// A keyset page request: rows after `after` (by id), `fetch` of them (one more than the page,
/// to learn whether another page exists).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    pub after: &'a str,
    pub fetch: i64,
}
