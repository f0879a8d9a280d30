//! Requests to the agent and its answers. One request per connection: the agent answers it and
//! closes. A control plane that goes away mid-request (its end of the socket closes) cancels
//! long work such as a backup, and nothing half-done is kept.

use serde::{Deserialize, Serialize};

use crate::{AgentError, BackupId, HomeserverId, Limits, SynapseSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who the agent is and what the host gives it.
    Hello,
    /// The tenant user and the encrypted volume exist, unlocked, at least this size.
    Ensure {
        homeserver: HomeserverId,
        volume_size_gb: u32,
    },
    /// The homeserver runs `spec` with `limits`: started if it is not running, restarted if it
    /// runs another spec, and given the new limits in place if only those changed.
    /// `attempt` names this attempt in the agent's log (the control plane's correlation id).
    Start {
        homeserver: HomeserverId,
        spec: Box<SynapseSpec>,
        limits: Limits,
        attempt: String,
    },
    /// Stops the homeserver (SIGTERM, then SIGKILL to its whole cgroup after a grace period).
    /// With `diagnose` (a correlation id), its last output is logged under that id first.
    Stop {
        homeserver: HomeserverId,
        diagnose: Option<String>,
    },
    Status {
        homeserver: HomeserverId,
    },
    /// Stops the homeserver and removes its volume, key, config, cgroups and user.
    Destroy {
        homeserver: HomeserverId,
    },
    /// The homeservers the agent has resources for.
    List,
    /// R23: counts read from the homeserver's database, as the tenant, inside its sandbox.
    Usage {
        homeserver: HomeserverId,
    },
    /// R19: each user's latest acceptance of the privacy notice, read the same way.
    Consents {
        homeserver: HomeserverId,
    },
    /// R4: writes an encrypted archive of the homeserver's data into the backup store.
    TakeBackup {
        homeserver: HomeserverId,
        backup: BackupId,
        created_at: i64,
    },
    /// R4: decrypts and verifies a backup to its end, unpacking it beside the live data (the
    /// homeserver keeps running).
    StageRestore {
        homeserver: HomeserverId,
        backup: BackupId,
    },
    /// R4: swaps the staged data in. The homeserver must be stopped.
    SwapInRestore {
        homeserver: HomeserverId,
    },
    DeleteBackup {
        homeserver: HomeserverId,
        backup: BackupId,
    },
    /// After a control-plane crash: discards archives that were never completed.
    RemoveIncompleteBackups,
}

impl Request {
    /// The operation's name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::Ensure { .. } => "ensure",
            Request::Start { .. } => "start",
            Request::Stop { .. } => "stop",
            Request::Status { .. } => "status",
            Request::Destroy { .. } => "destroy",
            Request::List => "list",
            Request::Usage { .. } => "usage",
            Request::Consents { .. } => "consents",
            Request::TakeBackup { .. } => "take_backup",
            Request::StageRestore { .. } => "stage_restore",
            Request::SwapInRestore { .. } => "swap_in_restore",
            Request::DeleteBackup { .. } => "delete_backup",
            Request::RemoveIncompleteBackups => "remove_incomplete_backups",
        }
    }

    /// The homeserver the request is about, if any (the agent serialises work per homeserver).
    pub fn homeserver(&self) -> Option<&HomeserverId> {
        match self {
            Request::Ensure { homeserver, .. }
            | Request::Start { homeserver, .. }
            | Request::Stop { homeserver, .. }
            | Request::Status { homeserver }
            | Request::Destroy { homeserver }
            | Request::Usage { homeserver }
            | Request::Consents { homeserver }
            | Request::TakeBackup { homeserver, .. }
            | Request::StageRestore { homeserver, .. }
            | Request::SwapInRestore { homeserver }
            | Request::DeleteBackup { homeserver, .. } => Some(homeserver),
            Request::Hello | Request::List | Request::RemoveIncompleteBackups => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    Hello(AgentInfo),
    Ensured(Ensured),
    Started(Started),
    Stopped,
    Status(HomeserverState),
    Destroyed,
    List { homeservers: Vec<HomeserverId> },
    Usage(TenantUsage),
    Consents { consents: Vec<Consent> },
    BackupTaken(BackupTaken),
    RestoreStaged(RestoreStaged),
    RestoreSwapped,
    BackupDeleted { existed: bool },
    IncompleteBackupsRemoved { count: u32 },
}

/// What goes back over the socket: an answer or a failure from the fixed set.
pub type Reply = Result<Response, AgentError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub protocol: u32,
    pub version: String,
    /// `v1` or `v2`.
    pub cgroups: String,
    /// `bubblewrap`, or `none` in a test build's benchmark mode.
    pub sandbox: String,
    /// The pids limit every homeserver gets.
    pub pids_max: u32,
}

/// A volume's size and fill, in bytes, as its tenant has it: the space the agent holds back
/// (its reserve) counts as neither used nor available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeUsage {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// R12: less than the reserve is left; the homeserver is blocked until it has room.
    pub full: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ensured {
    /// The tenant's uid: the ingress accepts only a socket this uid listens on.
    pub tenant_uid: u32,
    pub created: bool,
    pub grown: bool,
    pub volume: VolumeUsage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// False when the homeserver already ran this spec (its limits were refreshed).
    pub started: bool,
    pub fingerprint: String,
}

/// How a homeserver's sandbox last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Unix seconds.
    pub at: i64,
    /// Leads to the homeserver's last output in the agent's log.
    pub correlation_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeserverState {
    pub running: bool,
    /// The fingerprint of the spec it runs (or last ran).
    pub fingerprint: Option<String>,
    /// R5/R12: processes the kernel killed for the memory limit since the cgroup was made.
    pub oom_kills: u64,
    /// Set once a sandbox started by this agent process has ended.
    pub last_exit: Option<ExitReport>,
    /// Present while the volume is open.
    pub volume: Option<VolumeUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUsage {
    pub monthly_active_users: u64,
}

/// One user's latest acceptance of the privacy notice, as read from the homeserver's database
/// and checked by the agent's parser (bounded lengths, plain characters only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: String,
    pub version: String,
    /// Unix milliseconds.
    pub accepted_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackupTaken {
    pub size_bytes: u64,
    pub files: u64,
    pub plaintext_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStaged {
    pub files: u64,
    pub plaintext_bytes: u64,
}
