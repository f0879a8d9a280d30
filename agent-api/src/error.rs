//! The agent's failures: a fixed set of codes, each with a fixed message, and a correlation id
//! that leads the operator to the details in the agent's log. No free text crosses the socket,
//! so nothing a tenant wrote can reach the control plane, an API field or a customer.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The agent cannot be reached (control-plane side).
    Unavailable,
    /// The agent answered something the client did not expect (control-plane side).
    Protocol,
    /// The caller's peer credentials are not the control plane's.
    Forbidden,
    /// The request was malformed or broke the agent's input rules.
    InvalidRequest,
    /// This host lacks something the agent needs (see the agent's preflight).
    UnsupportedHost,
    /// There is no volume for this homeserver.
    NotFound,
    TenantUserFailed,
    VolumeCreateFailed,
    VolumeOpenFailed,
    /// The stored key does not unlock the volume.
    VolumeKeyMismatch,
    VolumeGrowFailed,
    DestroyFailed,
    ConfigWriteFailed,
    SigningKeyFailed,
    SandboxFailed,
    StopFailed,
    DatabaseReadFailed,
    DatabaseCopyFailed,
    BackupFailed,
    /// The homeserver's files add up to more than its volume can hold (sparse files).
    BackupTooLarge,
    /// The archive failed authentication: tampered, truncated or sealed under another key.
    BackupCorrupt,
    BackupMissing,
    /// The control plane went away while the backup was written; nothing was kept.
    Cancelled,
    RestoreFailed,
    /// Restored data is swapped in only while the homeserver is stopped.
    NotStopped,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unavailable => "agent_unavailable",
            ErrorCode::Protocol => "agent_protocol",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedHost => "unsupported_host",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TenantUserFailed => "tenant_user_failed",
            ErrorCode::VolumeCreateFailed => "volume_create_failed",
            ErrorCode::VolumeOpenFailed => "volume_open_failed",
            ErrorCode::VolumeKeyMismatch => "volume_key_mismatch",
            ErrorCode::VolumeGrowFailed => "volume_grow_failed",
            ErrorCode::DestroyFailed => "destroy_failed",
            ErrorCode::ConfigWriteFailed => "config_write_failed",
            ErrorCode::SigningKeyFailed => "signing_key_failed",
            ErrorCode::SandboxFailed => "sandbox_failed",
            ErrorCode::StopFailed => "stop_failed",
            ErrorCode::DatabaseReadFailed => "database_read_failed",
            ErrorCode::DatabaseCopyFailed => "database_copy_failed",
            ErrorCode::BackupFailed => "backup_failed",
            ErrorCode::BackupTooLarge => "backup_too_large",
            ErrorCode::BackupCorrupt => "backup_corrupt",
            ErrorCode::BackupMissing => "backup_missing",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::RestoreFailed => "restore_failed",
            ErrorCode::NotStopped => "not_stopped",
            ErrorCode::Internal => "internal",
        }
    }

    /// What the customer may read. Written by us, never composed from what a tenant wrote.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Unavailable => "the node agent is not reachable",
            ErrorCode::Protocol => "the node agent gave an unexpected answer",
            ErrorCode::Forbidden => "the node agent refused the caller",
            ErrorCode::InvalidRequest => "the node agent refused an invalid request",
            ErrorCode::UnsupportedHost => "this host cannot run homeservers; the operator must fix its setup",
            ErrorCode::NotFound => "the homeserver's volume does not exist",
            ErrorCode::TenantUserFailed => "the homeserver's system user could not be set up",
            ErrorCode::VolumeCreateFailed => "the encrypted volume could not be created",
            ErrorCode::VolumeOpenFailed => "the encrypted volume could not be opened",
            ErrorCode::VolumeKeyMismatch => "the encrypted volume's key does not match",
            ErrorCode::VolumeGrowFailed => "the encrypted volume could not be grown",
            ErrorCode::DestroyFailed => "the homeserver's resources could not all be removed",
            ErrorCode::ConfigWriteFailed => "the homeserver's configuration could not be written",
            ErrorCode::SigningKeyFailed => "the homeserver's signing key could not be generated",
            ErrorCode::SandboxFailed => "the homeserver's sandbox could not be started",
            ErrorCode::StopFailed => "the homeserver could not be stopped",
            ErrorCode::DatabaseReadFailed => "the homeserver's database could not be read",
            ErrorCode::DatabaseCopyFailed => "the online copy of the homeserver's database failed",
            ErrorCode::BackupFailed => "the backup could not be written",
            ErrorCode::BackupTooLarge => "the homeserver's files are larger than its volume; the backup was refused",
            ErrorCode::BackupCorrupt => "the backup archive failed authentication (tampered, truncated or sealed under another key)",
            ErrorCode::BackupMissing => "the backup archive does not exist",
            ErrorCode::Cancelled => "interrupted: the control plane stopped while this work was in progress; nothing was kept",
            ErrorCode::RestoreFailed => "the backup could not be restored",
            ErrorCode::NotStopped => "the homeserver must be stopped first",
            ErrorCode::Internal => "the node agent failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure reported by (or on the way to) the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{} (ref {correlation_id})", code.message())]
pub struct AgentError {
    pub code: ErrorCode,
    /// Leads to the details in the log of the side that made the error.
    pub correlation_id: String,
}

impl AgentError {
    pub fn new(code: ErrorCode, correlation_id: impl Into<String>) -> Self {
        AgentError { code, correlation_id: correlation_id.into() }
    }

    /// A client-side failure, logged there under a fresh correlation id.
    pub(crate) fn local(code: ErrorCode, detail: impl fmt::Display) -> Self {
        let id = crate::correlation_id();
        tracing::warn!(correlation_id = %id, code = code.as_str(), detail = %detail, "node agent call failed");
        AgentError { code, correlation_id: id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_fixed_and_carry_the_reference() {
        let e = AgentError::new(ErrorCode::BackupCorrupt, "ref-0123456789ab");
        assert_eq!(e.to_string(), "the backup archive failed authentication (tampered, truncated or sealed under another key) (ref ref-0123456789ab)");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json, serde_json::json!({"code": "backup_corrupt", "correlation_id": "ref-0123456789ab"}));
        // Unknown fields (free text) are not part of the shape.
        assert_eq!(json.as_object().unwrap().len(), 2);
    }
}
