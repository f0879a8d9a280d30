//! `BackupPolicy` (one per homeserver) and `Backup` (R4).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{BackupSchedule, RetentionDays, WindowTime};

/// Body of `POST /v1/homeservers/{id}/backup-policy` and of its `PUT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicySpec {
    /// R4: backups are daily.
    #[serde(default)]
    pub schedule: BackupSchedule,
    /// Start of the daily backup window, UTC `HH:MM`.
    #[serde(default)]
    pub window_start: WindowTime,
    /// Days each backup is kept (R4: 30 by default, 7-365).
    #[serde(default)]
    pub retention_days: RetentionDays,
}

/// A homeserver's backup policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackupPolicy {
    pub id: String,
    pub homeserver_id: String,
    pub schedule: BackupSchedule,
    /// UTC `HH:MM`.
    pub window_start: WindowTime,
    pub retention_days: RetentionDays,
    /// R4: backups are always encrypted.
    pub encrypted: bool,
    /// When the last completed backup started.
    pub last_backup_at: Option<DateTime<Utc>>,
    /// When the next scheduled backup is due.
    pub next_backup_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; send it back as `If-Match`.
    pub version: i64,
}

/// State of one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Running,
    Completed,
    Failed,
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// The daily backup of the policy's window (R4).
    #[default]
    Scheduled,
    /// Asked for with `POST /v1/homeservers/{id}/backups` or `matrixhostd backup take`.
    OnDemand,
}

/// One encrypted backup of a homeserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Backup {
    pub id: String,
    pub homeserver_id: String,
    /// `running` covers a backup that is queued or being written; only `completed` backups can
    /// be restored.
    pub status: BackupStatus,
    #[serde(default)]
    pub kind: BackupKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Size of the encrypted archive in bytes.
    pub size_bytes: Option<i64>,
    /// When retention deletes it (R4).
    pub expires_at: DateTime<Utc>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Answer of `DELETE /v1/homeservers/{id}/backups?erase=true` (R18).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackupErasure {
    pub homeserver_id: String,
    /// How many backups were deleted, archives included.
    pub deleted: u64,
}

/// Body of `POST /v1/homeservers/{id}/restores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreCreate {
    /// A `completed` backup of this homeserver.
    pub backup_id: String,
}

/// State of one restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    /// Waiting for the homeserver's current work (a reconcile or a backup) to finish.
    Pending,
    /// Verifying and unpacking the archive, then swapping it in with the homeserver stopped.
    Running,
    /// The backup's data is in place and the homeserver answers again.
    Completed,
    /// Nothing was changed unless `error` says otherwise.
    Failed,
}

/// Restoring a backup into its homeserver (R4). The homeserver is offline (status `updating`)
/// from the swap until Synapse answers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Restore {
    pub id: String,
    pub homeserver_id: String,
    pub backup_id: String,
    pub status: RestoreStatus,
    /// `api` or `operator` (`matrixhostd backup restore`).
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}
