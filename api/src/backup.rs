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

/// One encrypted backup of a homeserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Backup {
    pub id: String,
    pub homeserver_id: String,
    pub status: BackupStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Size of the encrypted archive in bytes.
    pub size_bytes: Option<i64>,
    /// When retention deletes it (R4).
    pub expires_at: DateTime<Utc>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}
