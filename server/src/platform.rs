//! What the HTTP layer and the workers (runtime, backups) share: the database, the settings,
//! the clock, the control plane's secrets key, its state directories and the node agent's
//! client. Neither side depends on the other; both depend on this.

use anyhow::Context;
use matrixhost_agent_api::AgentClient;
use matrixhost_seal::Sealer;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::state::{StateDirs, SECRETS_KEY_FILE};

#[derive(Debug)]
pub struct Platform {
    pub db: Db,
    pub settings: Settings,
    pub clock: Clock,
    /// Seals what the control plane keeps for later (Synapse secrets, the service account's
    /// token, an initial password until its account exists). Not the agent's master key.
    pub sealer: Sealer,
    pub dirs: StateDirs,
    /// The node agent, when homeservers are hosted.
    pub agent: Option<AgentClient>,
    wake_runtime: Notify,
    wake_backups: Notify,
}

impl Platform {
    /// Opens the database (migrating it) and the secrets key.
    pub async fn open(settings: Settings, dirs: StateDirs) -> anyhow::Result<Platform> {
        let url = settings.database_url.clone().unwrap_or_else(|| dirs.sqlite_url());
        let db = db::connect(&url).await?;
        let sealer = Sealer::load_or_create(&dirs.api_file(SECRETS_KEY_FILE)).context("the control plane's secrets key")?;
        let agent = match (&settings.runtime, dirs.agent_socket()) {
            (Some(_), Some(socket)) => Some(AgentClient::new(socket)),
            _ => None,
        };
        let clock = if settings.test_clock { Clock::adjustable() } else { Clock::system() };
        Ok(Platform { db, settings, clock, sealer, dirs, agent, wake_runtime: Notify::new(), wake_backups: Notify::new() })
    }

    /// Whether homeservers are really run (false with `--no-runtime`).
    pub fn hosts_homeservers(&self) -> bool {
        self.agent.is_some()
    }

    /// Tells the runtime that desired state changed.
    pub fn changed(&self) {
        self.wake_runtime.notify_one();
    }

    /// Tells the backup worker that there is work (an on-demand backup, a restore).
    pub fn backups_changed(&self) {
        self.wake_backups.notify_one();
    }

    pub(crate) async fn runtime_woken(&self) {
        self.wake_runtime.notified().await
    }

    pub(crate) async fn backups_woken(&self) {
        self.wake_backups.notified().await
    }
}
