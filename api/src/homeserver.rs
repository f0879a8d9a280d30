//! `Homeserver`: a hosted Matrix homeserver (R1, R2, R3, R9, R12, R19, R20, R22).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Email, EmailDomain, Encrypted, EntityName, HomeserverName, RegionCode, Registration,
    ServerName, VolumeSizeGb,
};

fn yes() -> bool {
    true
}

/// The homeserver's encrypted volume (R2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Size in GB, at most the plan's storage limit. Volumes only grow.
    pub size_gb: VolumeSizeGb,
    /// R2: always true.
    #[serde(default)]
    pub encrypted: Encrypted,
}

/// The customer as data controller, named in the homeserver's privacy notice (R19).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataController {
    /// Legal name of the customer entity.
    pub entity_name: EntityName,
    /// Contact email of the customer's administrator.
    pub admin_email: Email,
}

/// Lifecycle status. Long work is a status that clients poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HomeserverStatus {
    Provisioning,
    Running,
    Updating,
    Blocked,
    Deleting,
    Failed,
}

impl HomeserverStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Updating => "updating",
            Self::Blocked => "blocked",
            Self::Deleting => "deleting",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Provisioning, Self::Running, Self::Updating, Self::Blocked, Self::Deleting, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Body of `POST /v1/homeservers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HomeserverCreate {
    /// Name, unique in the organization.
    pub name: HomeserverName,
    /// R1: an available US region.
    pub region: RegionCode,
    /// The subscription paying for this homeserver; one homeserver per billing plan.
    pub billing_plan_id: String,
    /// Matrix server name; defaults to `<name>.<org>.<platform domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<ServerName>,
    /// Federation with the rest of the Matrix network (R9).
    #[serde(default = "yes")]
    pub federation_enabled: bool,
    /// Who may register (R9).
    #[serde(default)]
    pub registration: Registration,
    /// With `registration = email_domains`: the whitelisted domains (R9).
    #[serde(default)]
    pub allowed_email_domains: Vec<EmailDomain>,
    /// Read-only guest access (R9).
    #[serde(default)]
    pub guest_access: bool,
    /// End-to-end encryption on by default for new rooms; off only on plans that allow it (R22).
    #[serde(default = "yes")]
    pub encryption_by_default: bool,
    /// When true, deleting the homeserver is refused.
    #[serde(default)]
    pub deletion_protection: bool,
    pub volume: Volume,
    pub data_controller: DataController,
}

impl HomeserverCreate {
    /// The mutable part of the request, as an update would carry it.
    pub fn settings(&self) -> HomeserverSettings {
        HomeserverSettings {
            federation_enabled: self.federation_enabled,
            registration: self.registration,
            allowed_email_domains: self.allowed_email_domains.clone(),
            guest_access: self.guest_access,
            encryption_by_default: self.encryption_by_default,
            deletion_protection: self.deletion_protection,
            volume: self.volume.clone(),
            data_controller: self.data_controller.clone(),
        }
    }
}

/// The mutable settings of a homeserver; also the body of `PUT /v1/homeservers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HomeserverSettings {
    /// Federation with the rest of the Matrix network (R9).
    #[serde(default = "yes")]
    pub federation_enabled: bool,
    /// Who may register (R9).
    #[serde(default)]
    pub registration: Registration,
    /// With `registration = email_domains`: the whitelisted domains (R9).
    #[serde(default)]
    pub allowed_email_domains: Vec<EmailDomain>,
    /// Read-only guest access (R9).
    #[serde(default)]
    pub guest_access: bool,
    /// End-to-end encryption on by default for new rooms; off only on plans that allow it (R22).
    #[serde(default = "yes")]
    pub encryption_by_default: bool,
    /// When true, deleting the homeserver is refused.
    #[serde(default)]
    pub deletion_protection: bool,
    pub volume: Volume,
    pub data_controller: DataController,
}

/// Body of `PUT /v1/homeservers/{id}`.
pub type HomeserverUpdate = HomeserverSettings;

/// A hosted homeserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Homeserver {
    pub id: String,
    pub name: HomeserverName,
    pub server_name: ServerName,
    pub region: RegionCode,
    pub billing_plan_id: String,
    pub federation_enabled: bool,
    pub registration: Registration,
    /// Normalised: lower case, sorted, without duplicates.
    pub allowed_email_domains: Vec<EmailDomain>,
    pub guest_access: bool,
    pub encryption_by_default: bool,
    pub deletion_protection: bool,
    pub volume: Volume,
    pub data_controller: DataController,
    pub status: HomeserverStatus,
    /// Why the homeserver is `failed` or `blocked`.
    pub status_reason: Option<String>,
    /// Matrix client API base URL, once the homeserver runs.
    pub client_url: Option<String>,
    /// Where the homeserver's privacy notice is published (R19), once it runs.
    pub privacy_notice_url: Option<String>,
    /// Customer terms version accepted for this homeserver (R20).
    pub terms_version: String,
    /// When those terms were accepted (R20).
    pub terms_accepted_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; send it back as `If-Match`.
    pub version: i64,
}

/// Server-level usage of a homeserver (R23): counts and sizes only, never message contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HomeserverUsage {
    pub homeserver_id: String,
    /// Users active in the last 30 days whose accounts are past the trial period (R6).
    pub monthly_active_users: u64,
    /// The MAU cap in force (R5, R10).
    pub mau_cap: u32,
    /// Registered, non-deactivated, non-guest users.
    pub registered_users: u64,
    /// Bytes used on the homeserver's encrypted volume.
    pub volume_bytes_used: u64,
    pub volume_size_bytes: u64,
    pub measured_at: DateTime<Utc>,
}

/// What kind of thing happened to a homeserver (R12, R24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HomeserverEventKind {
    /// It ran out of its plan's memory; the kernel stopped its processes and it was restarted.
    OomKilled,
    /// It stopped on its own and was restarted.
    Crashed,
    /// It could not be started.
    StartFailed,
    /// Its storage is full: it is blocked (R12).
    StorageFull,
    /// Its storage has room again: the block is lifted.
    StorageAvailable,
}

impl HomeserverEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OomKilled => "oom_killed",
            Self::Crashed => "crashed",
            Self::StartFailed => "start_failed",
            Self::StorageFull => "storage_full",
            Self::StorageAvailable => "storage_available",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::OomKilled, Self::Crashed, Self::StartFailed, Self::StorageFull, Self::StorageAvailable].into_iter().find(|k| k.as_str() == s)
    }
}

/// Something that happened to a homeserver, oldest first. Messages are the platform's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HomeserverEvent {
    pub id: String,
    pub homeserver_id: String,
    pub kind: HomeserverEventKind,
    pub message: String,
    /// Leads the operator to the details in the platform's logs.
    pub reference: Option<String>,
    pub occurred_at: DateTime<Utc>,
}
