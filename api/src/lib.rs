//! The matrixhost hosting API contract, shared by `matrixhostd` and the Terraform provider.
//!
//! Types are written once here; the OpenAPI document (`api/openapi.json`) is generated from them.

pub mod backup;
pub mod billing_plan;
pub mod catalog;
pub mod common;
pub mod domain;
pub mod homeserver;
pub mod openapi;
pub mod operations;
pub mod request;
pub mod reserved_user;

pub use backup::*;
pub use billing_plan::*;
pub use catalog::*;
pub use common::*;
pub use domain::*;
pub use homeserver::*;
pub use reserved_user::*;

/// Version of the API contract, reported by `/healthz` and in the OpenAPI document.
pub const API_VERSION: &str = "1.0.0";

/// Header carrying the optimistic-concurrency version on writes.
pub const IF_MATCH: &str = "if-match";
/// Header making a create safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Largest page a list returns.
pub const MAX_PAGE_SIZE: u32 = 100;
