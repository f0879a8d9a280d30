//! The homeserver runtime. A reconciler brings each homeserver's actual state (tenant user,
//! encrypted volume, Synapse process, accounts) to the desired state in the database, and
//! re-adopts running homeservers after a restart of `matrixhostd`.

pub mod matrix_admin;
pub mod privacy_notice;
mod process;
mod reconcile;
mod store;
pub mod synapse_db;
pub mod synapse;
pub mod tenant_user;
pub mod volume;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

use crate::App;

pub use reconcile::Usage;
pub use store::forget_homeserver_in;

/// How the runtime runs homeservers.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// The Synapse venv's python.
    pub synapse_python: PathBuf,
    /// Ports handed to homeservers, inclusive.
    pub port_range: (u16, u16),
    /// R6: users count toward the MAU cap once their account is this many days old.
    pub mau_trial_days: u32,
    /// How long a homeserver may take to answer `/_matrix/client/versions`.
    pub start_timeout: Duration,
    /// How often the reconciler looks even when nothing wakes it.
    pub interval: Duration,
}

/// The processes the runtime knows, by homeserver id.
#[derive(Debug, Default)]
struct Processes(HashMap<String, process::Running>);

#[derive(Debug)]
pub struct Runtime {
    app: Arc<App>,
    settings: RuntimeSettings,
    volumes: Arc<volume::VolumeManager>,
    processes: Mutex<Processes>,
    wake: Arc<Notify>,
    /// One actor per homeserver at a time: a reconcile, a backup or a restore (R4).
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Runtime {
    pub fn new(app: Arc<App>, settings: RuntimeSettings) -> anyhow::Result<Arc<Runtime>> {
        let volumes = Arc::new(volume::VolumeManager::new(app.settings.state_dir.join("volumes")));
        anyhow::ensure!(
            settings.synapse_python.exists(),
            "the Synapse python {} does not exist; run scripts/setup.sh or set synapse_python",
            settings.synapse_python.display()
        );
        volumes.check_support()?;
        Ok(Arc::new(Runtime { wake: app.wake.clone(), app, settings, volumes, processes: Mutex::default(), locks: Default::default() }))
    }

    /// The homeserver's lock. Whoever holds it is the only one acting on the homeserver's
    /// process and volume: the reconciler skips a homeserver whose lock is taken, and a backup
    /// or restore waits for a reconcile to finish.
    pub fn homeserver_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
        locks.entry(id.to_owned()).or_default().clone()
    }

    pub fn volumes(&self) -> &Arc<volume::VolumeManager> {
        &self.volumes
    }

    pub fn synapse_python(&self) -> &Path {
        &self.settings.synapse_python
    }

    /// Stops the homeserver's Synapse (for a restore). The caller holds its lock; the
    /// reconciler starts it again once the lock is released and [`Runtime::wake`] is called.
    pub async fn stop_homeserver(&self, id: &str) {
        self.stop_process(id).await;
    }

    /// Asks the reconciler for a pass now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reconciles until the process ends: at once, whenever the API changes something, and at
    /// every interval (to notice dead processes and billing anniversaries).
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(err) = self.pass().await {
                tracing::error!(error = %format!("{err:#}"), "reconcile pass failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }
}
